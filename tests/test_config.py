"""Every Hydra config composes, names what exists, and bad names fail with the valid choices."""

from __future__ import annotations

import itertools
import dataclasses
import os
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from retake.methods import METHODS, get_method
from retake.models import load_adapter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "conf")


def options(group):
    return sorted(f[:-5] for f in os.listdir(os.path.join(CONF, group)) if f.endswith(".yaml"))


@pytest.fixture(autouse=True)
def hydra_conf():
    from retake.harness.schema import register

    register()  # the typed schema conf/config.yaml starts from
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        yield
    GlobalHydra.instance().clear()


def check(cfg):
    OmegaConf.resolve(cfg)
    get_method(cfg.method.name, **cfg.method.params)  # name registered, params valid
    assert cfg.dataset.name in dataset_names()
    assert cfg.sampling.max_frames >= 2 and cfg.engine.max_context >= 1
    import inspect
    from retake.config import PROMPT_FIELDS

    accepted = set(inspect.signature(load_adapter).parameters) | {"pretrained", "max_frames", "name", "tiny_arch",
                                                                    *PROMPT_FIELDS}
    assert set(cfg.model) <= accepted


def dataset_names():
    try:
        from retake.harness.datasets import DATASETS
        return set(DATASETS)
    except ImportError:  # pragma: no cover - the loaders land with the harness
        return set(options("dataset"))


@pytest.mark.parametrize("group", ["model", "method", "dataset", "logger"])
def test_every_group_option_composes(group):
    for option in options(group):
        cfg = compose("config", overrides=[f"{group}={option}", "data_root=/d"])
        check(cfg)
        name = cfg[group].name
        assert getattr(name, "value", name) == option  # one name everywhere: file name == name field (a choice: its value)
        assert cfg.dataset.data_root.startswith("/d/")


def test_one_name_everywhere():
    assert set(options("method")) == set(METHODS)
    assert set(options("dataset")) == dataset_names()


def sweep_cells(exp):
    """Every cell an experiment's multirun would launch, composed like Hydra's basic sweeper does."""
    cfg = compose("config", overrides=[f"+experiment={exp}"])
    params = cfg.hydra.sweeper.params if "hydra" in cfg else None
    if params is None:  # compose() drops the hydra node: read the sweep from the file itself
        raw = OmegaConf.load(os.path.join(CONF, "experiment", f"{exp}.yaml"))
        params = raw.hydra.sweeper.params
    axes = [[f"{k}={v}" for v in str(vals).split(",")] for k, vals in params.items()]
    for combo in itertools.product(*axes):
        yield compose("config", overrides=[f"+experiment={exp}", *combo])


@pytest.mark.parametrize("exp", options("experiment"))
def test_experiments_compose_every_cell(exp):
    lines = open(os.path.join(CONF, "experiment", f"{exp}.yaml")).read().splitlines()
    assert lines[0] == "# @package _global_"  # Hydra reads the directive only as the first line
    first = lines[1]
    assert first.startswith("# python -m retake.run -m +experiment=" + exp)  # the command that runs it
    cells = list(sweep_cells(exp))
    assert cells
    for cfg in cells:
        check(cfg)
        assert cfg.experiment_name == exp


def test_table3_rows_follow_the_paper():
    rows = {}
    for r in options("table3_row"):
        cfg = compose("config", overrides=["+experiment=table3", f"+table3_row={r}"])
        rows[r] = (cfg.method.name, cfg.sampling.max_frames, cfg.engine.max_context,
                   cfg.method.params.get("temporal_allocation"), cfg.method.params.get("layer_allocation"))
    assert rows["r0"][:3] == ("uniform", 128, 9216)
    assert rows["r1"] == ("adaretake", 128, 1024, False, "even")
    assert rows["r3"] == ("adaretake", 1024, 1024, False, "adaptive")
    assert rows["r4"] == ("adaretake", 1024, 1024, True, "adaptive")
    assert rows["r6"] == ("adaretake", 2048, 16384, True, "adaptive")


@pytest.mark.parametrize("group", ["model", "method", "dataset"])
def test_unknown_name_lists_valid_choices(group):
    with pytest.raises((MissingConfigException, ConfigCompositionException)) as e:
        compose("config", overrides=[f"{group}=nope"])
    msg = str(e.value)
    assert "nope" in msg and all(o in msg for o in options(group))


def test_slurm_launcher_composes():
    cfg = compose("config", overrides=["hydra/launcher=slurm", "+experiment=table1"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.gpus_per_node == 1


@pytest.mark.parametrize("override,key,message", [
    ("engine.max_context=abc", "engine.max_context", "could not be converted to Integer"),
    ("sampling.backend=opencv", "sampling.backend", "expected one of [pyav, decord]"),
    ("sampling.resize=nearest", "sampling.resize", "expected one of [uint8, float32]"),
    ("run.overwrite=maybe", "run.overwrite", "is not a valid bool"),
    ("engine.max_contxt=1", "engine.max_contxt", "not in 'EngineSection'"),
    ("model.dtype=float8", "model.dtype", "expected one of [auto, float32, bfloat16, float16]"),
])
def test_a_wrong_type_or_value_fails_at_compose_time_naming_the_key(override, key, message):
    with pytest.raises(ConfigCompositionException) as e:
        compose("config", overrides=[override])
    text = str(e.value) + str(e.value.__cause__)
    assert key in text and message in text, text


def test_ranges_are_checked_before_a_cell_starts():
    """What a type cannot say (a budget of 0, a negative limit) fails when the cell config is
    resolved, before any data or model is read, naming the key."""
    from retake.harness.runner import resolve_config

    for override, message in (("engine.max_context=0", "engine.max_context: must be >= 1"),
                              ("run.limit=-3", "run.limit: must be a positive number"),
                              ("run.max_failed_fraction=2", "run.max_failed_fraction: must be a number in [0, 1]"),
                              ("sampling.fps=0", "sampling.fps: must be > 0")):
        cfg = compose("config", overrides=[override])
        with pytest.raises(ValueError, match=re.escape(message)):
            resolve_config(cfg)


def test_one_source_of_defaults():
    """conf/config.yaml repeats no default of the schema; the runner's, the lmms-eval model's and
    the composed config's defaults are the schema's, and the schema's are the library's."""
    from retake.harness import schema
    from retake.harness.lmms_model import parse_model_args
    from retake.harness.runner import resolve_config

    raw = OmegaConf.load(os.path.join(CONF, "config.yaml"))
    assert set(raw.get("sampling", {})) == {"max_frames"} and "engine" not in raw and "run" not in raw
    composed = resolve_config(compose("config"))
    plain = resolve_config({"model": {"name": "m", "pretrained": "p"}, "method": {"name": "none"},
                            "dataset": {"name": "needle", "data_root": "d"}})
    for key in ("engine.max_context", "engine.chunk_frames", "engine.max_new_tokens", "sampling.fps",
                "sampling.backend", "sampling.resize", "run.max_failed_fraction", "run.reuse_videos"):
        section, name = key.split(".")
        assert composed[section][name] == plain[section][name] == schema.default(key)
    lm = parse_model_args({"pretrained": "/m"})
    for section in ("engine", "sampling"):
        for f in dataclasses.fields(getattr(lm, section)):
            assert getattr(getattr(lm, section), f.name) == schema.default(f"{section}.{f.name}"), f.name
    assert lm.run.prefetch == schema.default("run.prefetch")


def test_every_setting_is_declared_once_and_settable_everywhere():
    """The schema's sampling and engine sections are the library's dataclasses (the engine's only
    redeclares max_new_tokens' default); every one of their fields is settable from Hydra, the
    lmms-eval model args and ``retake ask``, and reaches the typed config unchanged in form."""
    import argparse
    import re

    from retake.cli import build_parser
    from retake.config import EngineConfig, SamplingConfig
    from retake.harness import schema
    from retake.harness.cells import typed
    from retake.harness.lmms_model import model_args_string, parse_model_args

    assert schema.SamplingSection is SamplingConfig and issubclass(schema.EngineSection, EngineConfig)
    assert set(schema.EngineSection.__dataclass_fields__) == set(EngineConfig.__dataclass_fields__)
    assert {k for k in vars(schema.EngineSection).get("__annotations__", {})} == {"max_new_tokens"}
    # one declaration of max_context with a default (VideoPlan.max_context is the value a method is given)
    src = os.path.join(os.path.dirname(CONF), "src", "retake")
    hits = []
    for root, _, files in os.walk(src):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(root, name), encoding="utf-8").read()
                hits += [name for _ in re.finditer(r"^\s+max_context\s*:\s*int\s*=", text, re.M)]
    assert hits == ["config.py"], hits
    ask = build_parser()._subparsers._group_actions[0].choices["ask"]
    flags = {a.dest for a in ask._actions}
    values = {"engine": {"chunk_frames": 3, "max_context": 999, "max_new_tokens": 5, "max_guide_tokens": 7,
                         "vision_batch_steps": 2, "reforge_positions": True, "offload_features": True,
                         "question_mode": "unknown", "question_tokens": 11, "fast_paths": False,
                         "repetition_penalty": 1.2},
              "sampling": {"fps": 1.5, "max_frames": 8, "max_long_side": 224, "backend": "decord", "resize": "float32",
                           "strict_frames": True, "frame_rule": "count", "min_pixels": 3136, "max_pixels": 6272}}
    for section, cls in (("engine", EngineConfig), ("sampling", SamplingConfig)):
        assert set(values[section]) == set(cls.__dataclass_fields__)  # the test covers every field
        overrides = [f"{section}.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in values[section].items()]
        got = getattr(typed(compose("config", overrides=overrides)), section)
        flat = getattr(parse_model_args({"pretrained": "/m", **{k: str(v) for k, v in values[section].items()}}), section)
        argv = ["v.mp4", "q", "--model", "/m"]
        for k, v in values[section].items():
            argv += [f"--{k.replace('_', '-')}"] if v is True else [f"--no-{k.replace('_', '-')}"] if v is False \
                else [f"--{k.replace('_', '-')}", str(v)]
        from retake.config import section_from_args

        cli = section_from_args(cls, ask.parse_args(argv), section)
        for k, v in values[section].items():
            assert k in flags
            assert getattr(got, k) == getattr(flat, k) == getattr(cli, k) == v, (section, k)
    # lmms-eval's command-line form reads back to the same typed arguments
    args = parse_model_args({"pretrained": "/m", "max_context": "1024", "fast_paths": "false"})
    again = parse_model_args(dict(p.split("=", 1) for p in model_args_string(args).split(",")))
    assert again == args and again.engine.fast_paths is False
    assert isinstance(argparse.ArgumentParser, type)

def test_the_moved_run_keys_still_work(caplog):
    """run.question_mode / run.offload_features are engine settings now; the old keys compose,
    land in the engine section with a warning, and name the same cell."""
    from retake.harness.cells import cell_name, resolve_config, typed

    old = compose("config", overrides=["run.question_mode=unknown", "run.offload_features=true"])
    new = compose("config", overrides=["engine.question_mode=unknown", "engine.offload_features=true"])
    assert cell_name(resolve_config(old)) == cell_name(resolve_config(new))
    t = typed(old)
    assert t.engine.question_mode == "unknown" and t.engine.offload_features is True


def test_every_setting_says_what_it_is():
    """Each field of the library's sections carries its comment, the one description that
    ``retake ask --help`` shows too: a new setting without one fails here."""
    from retake.config import EngineConfig, ModelConfig, SamplingConfig, field_comments

    for cls in (SamplingConfig, EngineConfig, ModelConfig):
        notes = field_comments(cls)
        missing = [f.name for f in dataclasses.fields(cls) if not notes.get(f.name)]
        assert not missing, (cls.__name__, missing)
