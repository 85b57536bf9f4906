"""Pins agree across pyproject, constraints and the conda environments; config files name
things that exist."""

from __future__ import annotations

import glob
import inspect
import os
import re

import yaml

from retake.methods import get_method
from retake.models import load_adapter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pins(lines):
    out = {}
    for line in lines:
        m = re.match(r"^\s*-?\s*\"?([A-Za-z0-9_.-]+)\s*([=<>!~][^\";#]*)", line.split("#")[0])
        if m and not line.strip().startswith("#"):
            out[m.group(1).lower()] = m.group(2).strip().rstrip('",')
    return out


def test_environment_pins_agree_with_pyproject():
    text = open(os.path.join(ROOT, "pyproject.toml")).read()
    project = _pins(re.findall(r'"([A-Za-z0-9_.-]+\s*[=<>!~][^"]*)"', text))
    project.update(_pins(open(os.path.join(ROOT, "constraints.txt")).read().splitlines()))
    for env_file in ("environment.yaml", "environment_npu.yaml"):
        env = yaml.safe_load(open(os.path.join(ROOT, env_file)))
        pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        pins = _pins(p for p in pip if not p.startswith("-e"))
        for name, spec in pins.items():
            if name == "torch-npu":
                assert spec == project["torch"], f"{env_file}: torch-npu must match torch {project['torch']}"
                continue
            assert name in project, f"{env_file} pins {name}, which pyproject/constraints do not list"
            assert spec == project[name], f"{env_file}: {name}{spec} != pyproject {name}{project[name]}"
        assert "flash-attn" not in pins and "flash_attn" not in pins  # optional, never required


def test_method_configs_name_registered_methods():
    files = glob.glob(os.path.join(ROOT, "conf", "method", "*.yaml"))
    assert files
    for f in files:
        cfg = yaml.safe_load(open(f))
        assert cfg["name"] == os.path.basename(f)[:-5]  # one name everywhere
        get_method(cfg["name"], **cfg.get("params", {}))


def test_model_configs_match_loader():
    accepted = set(inspect.signature(load_adapter).parameters) | {"name", "pretrained", "max_frames", "tiny_arch"}
    for f in glob.glob(os.path.join(ROOT, "conf", "model", "*.yaml")):
        cfg = yaml.safe_load(open(f))
        assert set(cfg) <= accepted, f"{f}: unknown keys {set(cfg) - accepted}"
