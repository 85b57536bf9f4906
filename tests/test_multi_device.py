"""Models dispatched over devices with a per-module ``device_map`` (accelerate hooks move each
layer's inputs to its device; the cache, scores and positions must follow every layer).

On CPU every entry is "cpu", but spelled out per decoder layer and the hooks forced, so the
dispatched code path runs; with a GPU the layers are split between the CPU and the GPU."""

from __future__ import annotations

import warnings

import pytest
import torch

from conftest import make_inputs
from retake.engine import Engine, EngineConfig
from retake.methods import get_method
from retake.models import load_adapter
from test_engine import plain_model, reference_logits, rel_err


def per_module_device_map(model, language_model, layer_device) -> dict[str, str]:
    """Every decoder layer and every other piece of the model named on its own: the language
    model's layers -> ``layer_device(i)``, everything else -> "cpu"."""
    lm = next(n for n, m in model.named_modules() if m is language_model)
    ancestors = {""} | {lm.rsplit(".", i)[0] for i in range(lm.count(".") + 1)}
    dm = {}
    for name, module in model.named_modules():
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if name in ancestors:
            dm.update({f"{name}.{p}".lstrip("."): "cpu" for p, _ in module.named_parameters(recurse=False)})
        elif parent == f"{lm}.layers":
            dm[name] = layer_device(int(name.rsplit(".", 1)[1]))
        elif parent in ancestors and name != f"{lm}.layers":
            dm[name] = "cpu"
    return dm


def dispatched(path, layer_device):
    """The adapter of a model loaded with a per-module device map, with accelerate's hooks
    (transformers adds none when every entry names the same device: force them)."""
    from accelerate import dispatch_model

    ad = load_adapter(path, dtype="float32", device="cpu")
    dm = per_module_device_map(ad.model, ad.language_model, layer_device)
    ad = load_adapter(path, dtype="float32", device="cpu", device_map=dm)
    with warnings.catch_warnings():  # parameters named in the map (LLaVA's image_newline) are not modules
        warnings.filterwarnings("ignore", message="The following device_map keys do not match")
        dispatch_model(ad.model, dm, main_device="cpu", force_hooks=True)
    assert all(hasattr(layer, "_hf_hook") for layer in ad.language_model.layers)
    return ad


def check_dispatched(ad, path, sampled, tol):
    inputs, prompt = make_inputs(ad, sampled)
    out = Engine(ad, EngineConfig(chunk_frames=4, max_new_tokens=1)).run(inputs, prompt, get_method("none"))
    ref = reference_logits(plain_model(path), ad, inputs, prompt)
    assert rel_err(out.first_logits, ref) <= tol
    budget = prompt.num_text_tokens + inputs.num_tokens // 3
    for reforge in (False, True):
        res = Engine(ad, EngineConfig(chunk_frames=4, max_context=budget, max_new_tokens=3, reforge_positions=reforge)).run(
            inputs, prompt, get_method("adaretake"))
        assert sum(res.kv_tokens_per_layer) / ad.num_layers <= budget + inputs.num_frames // 4
        assert len(set(res.kv_tokens_per_layer)) > 1 and torch.isfinite(res.first_logits).all()


def test_per_layer_device_map_on_cpu(arch, tiny_dirs, sampled):
    ad = dispatched(tiny_dirs[arch], lambda i: "cpu")
    check_dispatched(ad, tiny_dirs[arch], sampled, 1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_layers_split_between_cpu_and_gpu(arch, tiny_dirs, sampled):
    ad = dispatched(tiny_dirs[arch], lambda i: "cpu" if i % 2 == 0 else "cuda:0")
    assert {p.device.type for p in ad.language_model.layers.parameters()} == {"cpu", "cuda"}
    check_dispatched(ad, tiny_dirs[arch], sampled, 1e-4)
