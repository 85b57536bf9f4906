"""``protocol=lmms_eval``: frames, sizes and prompt as lmms-eval 0.7.3's Qwen chat wrappers make
them (qwen-vl-utils 0.0.14, transformers 5.23), and a cell run under it. The wrappers themselves
need torchvision, which this environment has not: ``make parity`` runs them side by side with us
(docs/harness.md, "Protocols"); the figures below are theirs, recorded from that run."""

from __future__ import annotations

import json
import os

import pytest
import torch

from retake.video import area_size, load_video, num_sample_frames, processor_size, sample_indices, write_test_video


def test_frame_count_rule():
    """count: max_frames whatever the duration, fewer only when the video has fewer frames,
    floored to even (lmms-eval's ``max(2, 2 * (min(max_num_frames, N) // 2))``); fps: the
    authors' duration x fps."""
    assert num_sample_frames(795, 10.0, 2.0, 32, "count") == 32
    assert num_sample_frames(795, 10.0, 2.0, 32, "fps") == 32  # 159 s at 2 fps, capped
    assert num_sample_frames(64, 2.0, 2.0, 32, "count") == 32
    assert num_sample_frames(31, 30.0, 2.0, 32, "count") == 30
    assert num_sample_frames(31, 30.0, 2.0, 32, "fps") == 2  # one second of video
    assert num_sample_frames(1, 30.0, 2.0, 32, "count") == 2
    with pytest.raises(ValueError, match="valid choices: fps, count"):
        num_sample_frames(10, 1.0, 1.0, 8, "floor")
    # the indices qwen-vl-utils reads (fp32 linspace, rounded half to even), as recorded:
    # vtest.avi (795 frames) at 32, needle (64 frames) at 32
    assert sample_indices(795, 32)[:4] == [0, 26, 51, 77] and sample_indices(795, 32)[-2:] == [768, 794]
    assert sample_indices(64, 32) == list(range(0, 32, 2)) + list(range(33, 64, 2))


@pytest.mark.parametrize("hw,factor,n,bounds,size", [
    # lmms-eval's defaults (min_pixels 200704, max_pixels 1605632, capped per frame at 768 f^2 = 602112)
    ((56, 56), 28, 32, (200704, 1605632), (448, 448)),  # the needle videos: upscaled to min_pixels
    ((576, 768), 28, 32, (200704, 1605632), (588, 756)),  # vtest.avi
    ((405, 720), 28, 32, (200704, 1605632), (392, 728)),  # cityCC0.mpg
    # max_num_frames=64, min_pixels = max_pixels = 3136
    ((56, 56), 28, 64, (3136, 3136), (56, 56)),
    ((576, 768), 28, 64, (3136, 3136), (28, 56)),
])
def test_area_size_as_recorded_from_qwen_vl_utils(hw, factor, n, bounds, size):
    assert area_size(*hw, factor, n, *bounds) == size


def installed_function(package: str, module: str, name: str, helpers: tuple = (), constants: tuple = ()):
    """A function of an installed package compiled from its own source, with the module-level
    helpers and constants it uses: its module imports torchvision at the top, which this
    environment has not (the function itself needs only ``math``)."""
    import ast
    import importlib.util
    import math
    import typing

    spec = importlib.util.find_spec(package)
    path = os.path.join(os.path.dirname(spec.origin), *module.split("/"))
    tree = ast.parse(open(path, encoding="utf-8").read())
    consts = [n for n in tree.body if isinstance(n, ast.Assign) and any(getattr(t, "id", "") in constants
                                                                        for t in n.targets)]
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in {name, *helpers}]
    ns = {"math": math, "Optional": typing.Optional, "Tuple": tuple}
    exec(compile(ast.Module(body=consts + funcs, type_ignores=[]), path, "exec"), ns)
    return ns[name]


def qwen_vl_utils_smart_resize():
    return installed_function("qwen_vl_utils", "vision_process.py", "smart_resize",
                              ("round_by_factor", "ceil_by_factor", "floor_by_factor"),
                              ("MAX_RATIO", "IMAGE_MIN_TOKEN_NUM", "IMAGE_MAX_TOKEN_NUM"))


def test_area_size_is_qwen_vl_utils_smart_resize_under_its_per_frame_cap():
    """Over sizes, frame counts, both patch sizes and bounds: our size is theirs at the bound
    fetch_video gives it (max(min(768 f^2, 0.9 * 128000 f^2 / n * 2), int(1.05 min)), capped by
    max_pixels)."""
    theirs = qwen_vl_utils_smart_resize()
    checked = 0
    for f in (28, 32):
        for n in (2, 32, 256, 768, 2048):
            for lo, hi in ((200704, 1605632), (3136, 3136), (3136, 12544), (None, None)):
                min_px = 128 * f * f if lo is None else lo
                cap = max(min(768 * f * f, 128000 * f * f * 0.9 / n * 2), int(min_px * 1.05))
                max_px = cap if hi is None else min(hi, cap)
                if max_px < min_px:
                    continue
                for h, w in ((56, 56), (576, 768), (405, 720), (1080, 1920), (90, 1000), (361, 263)):
                    try:
                        expected = theirs(h, w, factor=f, min_pixels=min_px, max_pixels=max_px)
                    except (AssertionError, ValueError):
                        continue
                    if min(expected) < f:  # their floor may reach 0; we refuse that (tested below)
                        continue
                    assert area_size(h, w, f, n, lo, hi) == tuple(expected), (h, w, f, n, lo, hi)
                    checked += 1
    assert checked > 200


def test_area_size_refuses_what_qwen_vl_utils_refuses():
    with pytest.raises(ValueError, match="max_pixels=150528 is below sampling.min_pixels=200704"):
        area_size(56, 56, 28, 32, 200704, 150528)
    with pytest.raises(ValueError, match="aspect ratio"):
        area_size(2, 600, 28, 32, None, None)


def test_processor_resize_is_transformers_own(tmp_path):
    """The second resize is the Qwen2-VL video processor's smart_resize (transformers' own
    function, compiled from its source) on frames already sized by the first; only frames under
    min_pixels move."""
    smart_resize = installed_function("transformers", "models/qwen2_vl/video_processing_qwen2_vl.py", "smart_resize")

    for min_px, max_px in ((3136, 3136), (150528, 150528), (200704, 1605632), (3136, 12544)):
        for h in range(28, 28 * 20, 28):
            for w in range(28, 28 * 20, 28):
                if h * w > max_px:
                    continue
                theirs = smart_resize(h, w, factor=28, min_pixels=min_px, max_pixels=max_px)
                ours = processor_size(h, w, 28, min_px) or (h, w)
                assert tuple(theirs) == ours, (h, w, min_px, max_px)
    assert processor_size(28, 56, 28, 3136) == (56, 84)  # vtest / cityCC0 at min = max = 3136, as recorded


def test_load_video_by_area_with_the_processor_resize(tmp_path):
    """Frames sized by area, then (Qwen2-VL's processor) brought up to min_pixels, float and
    unclamped; without the processor resize they stay uint8."""
    clip = write_test_video(tmp_path / "wide.mp4", num_frames=40, size=(144, 192), fps=10)
    v = load_video(clip, max_frames=8, frame_rule="count", resize="float32", min_pixels=3136, max_pixels=3136)
    assert v.num_frames == 8 and v.frames.dtype == torch.uint8 and tuple(v.frames.shape[-2:]) == (28, 56)
    w = load_video(clip, max_frames=8, frame_rule="count", resize="float32", min_pixels=3136, max_pixels=3136,
                   processor_resize=True)
    assert w.frames.dtype == torch.float32 and tuple(w.frames.shape[-2:]) == (56, 84)
    expected = torch.nn.functional.interpolate(v.frames.float(), size=(56, 84), mode="bicubic", align_corners=False,
                                               antialias=True)
    assert torch.equal(w.frames, expected)
    assert w.sampling_fps == pytest.approx(8 / 40 * 10)  # what the processor derives second_per_grid_ts from


@pytest.fixture(scope="module")
def protocol_cells(tmp_path_factory):
    """The same tiny cell under both protocols, through lmms-eval's evaluator."""
    from omegaconf import OmegaConf

    from retake.harness.runner import cell_dir, run_cell
    from retake.harness.schema import compose
    from retake.harness.benchmarks.synthetic import write_synthetic_benchmark

    root = tmp_path_factory.mktemp("protocol")
    data = write_synthetic_benchmark(root / "data", formats=("synthetic",), num_videos=2, questions_per_video=2)
    out = {}
    for protocol in ("authors", "lmms_eval"):
        cfg = compose([f"protocol={protocol}", "model=tiny_qwen2_5_vl", f"model.pretrained={root / 'tiny'}",
                       "model.device=cpu", "method=none", "dataset=synthetic", f"dataset.data_root={data['synthetic']}",
                       "sampling.max_frames=8", "sampling.max_long_side=56", "engine.chunk_frames=4",
                       "engine.max_context=4096", "engine.max_new_tokens=2", f"run.results_root={root / 'runs'}",
                       "run.prefetch=0"] + (["sampling.min_pixels=3136", "sampling.max_pixels=6272"]
                                            if protocol == "lmms_eval" else []))
        cfg = OmegaConf.to_container(cfg, resolve=True)
        metrics = run_cell(cfg)
        folder = cell_dir(cfg)
        with open(os.path.join(folder, "predictions.jsonl")) as f:
            out[protocol] = (folder, metrics, [json.loads(line) for line in f])
    return out


def test_a_cell_names_its_protocol(protocol_cells):
    from retake.harness.tables import collect

    (a_dir, a, a_rec), (l_dir, lm, l_rec) = protocol_cells["authors"], protocol_cells["lmms_eval"]
    assert "__lmms_eval" in os.path.basename(l_dir) and "lmms_eval" not in os.path.basename(a_dir)
    assert a["cell"]["protocol"] == "authors" and lm["cell"]["protocol"] == "lmms_eval"
    settings = lm["cell"]["settings"]
    assert settings["sampling.frame_rule"] == "count" and settings["model.position_rule"] == "transformers"
    assert settings["model.system_prompt"] == "You are a helpful assistant."
    assert all(r["error"] is None for r in a_rec + l_rec)
    assert {r["frames"] for r in l_rec} == {8}  # a fixed count, whatever the duration
    rows = collect(os.path.dirname(l_dir))
    row = rows[rows["path"] == l_dir].iloc[0]
    assert row["protocol"] == "lmms_eval" and "protocol=lmms_eval" in row["settings"]


def test_the_lmms_eval_protocol_says_where_it_is_not_lmms_evals():
    from retake.harness.preflight import protocol_warning

    assert protocol_warning("lmms_eval", "qwen2_5_vl") is None and protocol_warning("authors", "internvl") is None
    assert "its own way" in protocol_warning("lmms_eval", "llava_onevision")
