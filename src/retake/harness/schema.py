"""The typed schema of a cell config: one source of defaults, checked when Hydra composes.

Its ``sampling`` and ``engine`` sections *are* the library's ``retake.config.SamplingConfig``
and ``EngineConfig`` (``model`` extends ``ModelConfig``): one declaration of each setting, its
default and its range check, from the Hydra command line to the engine without a change of
form (``retake.harness.cells.typed`` gives a composed config as these dataclasses).

``RetakeConfig`` (registered in Hydra's ConfigStore as ``retake_schema``, the first entry of
``conf/config.yaml``'s defaults) types every key of the six sections plus ``logger``,
``data_root`` and ``experiment_name``. So a wrong type or an unknown choice fails when the
config is composed, naming the key (``engine.max_context=abc``: "Value 'abc' of type 'str'
could not be converted to Integer ... full_key: engine.max_context"), an unknown key fails
too, and ranges are checked by the sections' ``__post_init__`` when a cell starts
(:func:`retake.harness.cells.resolve_config`), before any model loads.

Defaults live here only: ``conf/config.yaml`` sets none of these (its sampling's
``max_frames`` follows the model config), the runner fills a plain YAML or dict cell config
from this schema, and the lmms-eval model args take theirs from it. Sampling and engine
defaults are the library's own (``SamplingConfig``, ``EngineConfig``), except
``max_new_tokens`` (16: multiple choice needs a letter, ``tasks.MAX_NEW_TOKENS``).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf

from ..config import (  # noqa: F401 - Backend, Dtype, Resize: the schema's choices, importable here
    Backend, Choice, Dtype, EngineConfig, ModelConfig, QuestionMode, Resize, SamplingConfig, _check,
)
from .tasks import MAX_NEW_TOKENS


class Logger(Choice):
    none = "none"
    wandb = "wandb"


class OnBusy(Choice):
    wait = "wait"
    exit = "exit"


@dataclass
class ModelSection(ModelConfig):
    """``retake.config.ModelConfig`` (how the checkpoint loads) plus the cell's model name, the
    frames it is run with and the tiny test models' architecture."""

    name: str = MISSING
    pretrained: str = MISSING  # a local checkpoint directory or a hub id
    max_frames: int = SamplingConfig.max_frames  # the frames this model is run with (sampling.max_frames)
    tiny_arch: Optional[str] = None  # a tiny random checkpoint is written at `pretrained` if none is there

    def __post_init__(self):
        super().__post_init__()
        _check(self.max_frames >= 2, "model.max_frames", f"must be >= 2, got {self.max_frames}")


@dataclass
class MethodSection:
    name: str = MISSING
    params: dict[str, Any] = field(default_factory=dict)  # checked by the method's own dataclass


@dataclass
class DatasetSection:
    name: str = MISSING
    data_root: str = MISSING


SamplingSection = SamplingConfig  # retake.config: one declaration


@dataclass
class EngineSection(EngineConfig):
    """``retake.config.EngineConfig``; one default differs in the harness: ``max_new_tokens``
    (16: a multiple-choice answer is a letter, ``tasks.MAX_NEW_TOKENS``). ``max_guide_tokens``
    null is the dataset's own (LongVideoBench: 152), else the whole suffix."""

    max_new_tokens: int = MAX_NEW_TOKENS


@dataclass
class RunSection:
    results_root: str = "results/runs"
    limit: Optional[int] = None  # the first N samples only (a separate cell: __limit<N>)
    overwrite: bool = False
    retry_failed: bool = False
    max_failed_fraction: float = 0.05
    # input pipeline (answers do not change): videos whose inputs and vision features are kept for
    # their next questions, and videos decoded ahead in a background thread; 0: off
    reuse_videos: int = 1
    prefetch: int = 1
    # moved to engine.question_mode / engine.offload_features (accepted here with a warning:
    # retake.harness.cells.MOVED); null: not given here
    offload_features: Optional[bool] = None
    question_mode: Optional[QuestionMode] = None
    # question_mode=unknown: compress each video once and answer all its questions over that cache
    # (answers do not change: only the time)
    reuse_cache: bool = True
    # another process runs the same cell (it holds the cell's lock): wait for it to finish (then
    # the cell is done, and skipped), or exit at once (code 75); the ranks of one run share a cell
    on_busy: OnBusy = OnBusy.wait

    def __post_init__(self):
        _check(self.limit is None or self.limit >= 1, "run.limit", f"must be a positive number of samples or null, got {self.limit}")
        _check(0 <= self.max_failed_fraction <= 1, "run.max_failed_fraction",
               f"must be a number in [0, 1], got {self.max_failed_fraction}")
        for key in ("reuse_videos", "prefetch"):
            _check(getattr(self, key) >= 0, f"run.{key}", f"must be >= 0 (0 turns it off), got {getattr(self, key)}")


@dataclass
class LoggerSection:
    name: Logger = Logger.none
    project: str = "retake"
    entity: Optional[str] = None
    group: Optional[str] = None
    mode: Optional[str] = None  # online | offline | disabled; null: wandb's default / WANDB_MODE


@dataclass
class RetakeConfig:
    model: ModelSection = MISSING
    method: MethodSection = MISSING
    dataset: DatasetSection = MISSING
    sampling: SamplingSection = field(default_factory=SamplingSection)
    engine: EngineSection = field(default_factory=EngineSection)
    run: RunSection = field(default_factory=RunSection)
    logger: LoggerSection = field(default_factory=LoggerSection)
    data_root: str = "data"
    experiment_name: str = "default"
    # which evaluation protocol the sampling / model keys were set from (conf/protocol/): authors
    # (the papers' and the authors' code) or lmms_eval (lmms-eval's own wrappers); a cell of its
    # own (__<protocol>) when not authors. Set by the protocol config group, named in metrics.json,
    # the tables and wandb (docs/harness.md, "Protocols")
    protocol: str = "authors"


SCHEMA_NAME = "retake_schema"
_registered = False
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../retake


def project_path(relative: str, package_dir: str = PACKAGE_DIR) -> str:
    """``${project:relative}`` in a config: a file of the project itself (the committed needle
    checkpoint) as an absolute path, whatever the working directory. In a checkout
    (``<root>/src/retake`` beside ``<root>/pyproject.toml``) it is ``<root>/relative``; in an
    installed package, ``<package>/relative`` (the package's data)."""
    src = os.path.dirname(package_dir)
    root = os.path.dirname(src)
    if os.path.basename(src) == "src" and os.path.isfile(os.path.join(root, "pyproject.toml")):
        return os.path.join(root, relative)
    return os.path.join(package_dir, relative)


def register_resolvers() -> None:
    """OmegaConf's ``${project:...}`` (:func:`project_path`); idempotent."""
    if not OmegaConf.has_resolver("project"):
        OmegaConf.register_new_resolver("project", project_path)


register_resolvers()


def register() -> None:
    """Put :class:`RetakeConfig` in Hydra's ConfigStore as ``retake_schema`` (idempotent)."""
    global _registered
    register_resolvers()
    if not _registered:
        from hydra.core.config_store import ConfigStore

        ConfigStore.instance().store(name=SCHEMA_NAME, node=RetakeConfig)
        _registered = True


def default(key: str):
    """The schema's default of a dotted key (``"engine.max_context"``), enums as their value."""
    section, name = key.split(".")
    cls = typing.get_type_hints(RetakeConfig)[section]
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return value.value if isinstance(value, Enum) else value


def config_dir() -> str:
    """The packaged Hydra config folder (``retake/conf``; ``conf/`` in a checkout links there)."""
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def compose(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config"):
    """A cell config composed from the packaged configs as ``python -m retake.run OVERRIDES``
    would compose it (the schema registered first)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides))
