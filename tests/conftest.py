"""Shared fixtures: tiny checkpoints of both architectures, written to disk and loaded the
way a real checkpoint is, and small videos written with PyAV."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

# no test reaches a model hub: a hub id fails at once instead of after the client's retries
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from retake.models import load_adapter  # noqa: E402
from retake.tiny import NEW_ARCHS, TEST_ARCHS, write_tiny_model  # noqa: E402
from retake.video import load_video, write_test_video  # noqa: E402

torch.set_num_threads(1)  # two xdist workers share two cores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(name: str):
    """``scripts/<name>.py`` imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {arch: write_tiny_model(arch, root / arch, seed=0) for arch in TEST_ARCHS}


@pytest.fixture(scope="session", params=TEST_ARCHS)
def arch(request):
    return request.param


@pytest.fixture(scope="session")
def adapters(tiny_dirs):
    return {arch: load_adapter(path, dtype="float32", device="cpu") for arch, path in tiny_dirs.items()}


@pytest.fixture(scope="session")
def new_dirs(tmp_path_factory):
    """Tiny checkpoints of the 2026 families (``retake.tiny.NEW_ARCHS``), apart from the four
    every engine test runs on (their own tests and the all-methods test cover them)."""
    root = tmp_path_factory.mktemp("tiny_new")
    return {arch: write_tiny_model(arch, root / arch, seed=0) for arch in NEW_ARCHS}


@pytest.fixture(scope="session", params=NEW_ARCHS)
def new_arch(request):
    return request.param


@pytest.fixture(scope="session")
def new_adapters(new_dirs):
    return {arch: load_adapter(path, dtype="float32", device="cpu") for arch, path in new_dirs.items()}


@pytest.fixture(scope="session")
def video_path(tmp_path_factory):
    """12 s at 8 fps, 120x200: at 2 fps -> 24 frames, resized to 56x84 with max_long_side=84."""
    return write_test_video(tmp_path_factory.mktemp("videos") / "clip.mp4", num_frames=96, size=(120, 200), fps=8, seed=1)


@pytest.fixture(scope="session")
def sampled(video_path):
    return load_video(video_path, fps=2.0, max_frames=16, max_long_side=84)


def make_inputs(adapter, sampled, question="What happens in the video? Answer briefly."):
    inputs = adapter.prepare_video(sampled.frames, sampled.sampling_fps, sampled.timestamps)
    return inputs, adapter.build_prompt(question, inputs)


@dataclass
class Captured:
    """One layer's view during one chunk, cloned. query ``[H, n+g, d]`` (post-RoPE);
    key/value ``[H_kv, cache+n+g, d]`` (the layer's whole cache incl. the input);
    positions ``[R, n+g]``; cos/sin ``[n+g, d]``."""

    chunk: int
    layer: int
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    n: int
    g: int
    scaling: float
    positions: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    video_start: int = 0  # cache entries before the video
    heads: tuple | None = None  # (head_lengths, ragged_end) of a per-KV-head layer

    def held(self, num_query_heads: int | None = None):
        """bool ``[H_kv, K]`` (or per query head ``[H, K]``): True where the head holds the entry
        (a per-KV-head layer's padding is False)."""
        K = self.key.shape[1]
        j = torch.arange(K)
        if self.heads is None:
            m = torch.ones(self.key.shape[0], K, dtype=torch.bool)
        else:
            lengths, end = self.heads
            m = (j[None, :] < torch.tensor(lengths)[:, None]) | (j[None, :] >= end)
        return m if num_query_heads is None else m.repeat_interleave(num_query_heads // m.shape[0], 0)

    @property
    def video_keys(self):
        """The layer's video entries held before the chunk, then the chunk's."""
        return self.key[:, self.video_start : self.cache_len + self.n]

    @property
    def video_values(self):
        return self.value[:, self.video_start : self.cache_len + self.n]

    @property
    def cache_len(self):
        return self.key.shape[1] - self.n - self.g

    @property
    def chunk_keys(self):
        return self.key[:, self.cache_len : self.cache_len + self.n]

    @property
    def chunk_values(self):
        return self.value[:, self.cache_len : self.cache_len + self.n]

    def attention(self, q, k):
        """softmax(q k^T * scaling), KV heads expanded: ``[H, q, k]`` (written here, not taken
        from the method code, so recomputed scores are independent of it)."""
        k = k.repeat_interleave(q.shape[0] // k.shape[0], 0)
        return torch.softmax(q.double() @ k.double().transpose(-1, -2) * self.scaling, -1)


class Recorder:
    """Wraps a method: records what every layer showed it and what it selected, so tests can
    recompute its scores independently of its code. ``views[c][layer]`` is a Captured;
    ``selected[c]`` the method's per-layer selection for chunk c. A two-pass method's scoring
    pass is recorded too: ``scoring_views[g][layer]``, ``groups[g]`` (the ScoringGroup),
    ``logits[g]``, and ``input_keep`` (``plan.input_keep`` when the answer pass starts)."""

    def __init__(self, inner):
        self.inner, self.views, self.selected = inner, {}, {}
        self.scoring_views, self.groups, self.logits = {}, {}, {}
        self.name = inner.name

    @property
    def uses_guide(self):  # a method may switch these in begin()
        return self.inner.uses_guide

    def declared(self, name):
        return self.inner.declared(name)

    @property
    def observes(self):
        return True

    @property
    def question_aware(self):
        return self.inner.question_aware

    @property
    def proxy_guide(self):
        return self.inner.proxy_guide

    @property
    def scoring_pass(self):
        return self.inner.scoring_pass

    @property
    def scoring_logits(self):
        return self.inner.scoring_logits

    def scoring_groups(self, plan):
        return self.inner.scoring_groups(plan)

    def scoring_layers(self, num_layers):
        return self.inner.scoring_layers(num_layers)

    def score_group(self, group, logits):
        self.groups[group.index], self.logits[group.index] = group, logits
        return self.inner.score_group(group, logits)

    def end_scoring(self):
        self.inner.end_scoring()
        self._keep()

    def begin(self, plan):
        self.inner.begin(plan)
        self.plan = plan
        self._keep()

    def _keep(self):
        self.input_keep = None if self.plan.input_keep is None else self.plan.input_keep.clone()

    def observe(self, view):
        cos, sin = view.rope()
        index = view.group.index if view.group is not None else view.chunk.index
        store = self.scoring_views if view.group is not None else self.views
        store.setdefault(index, {})[view.layer] = Captured(
            index, view.layer, view.query.clone(), view.key.clone(), view.value.clone(), view.num_chunk,
            view.num_guide, view.scaling, view.positions.clone(), cos.clone(), sin.clone(), view.video_start,
            None if view.heads is None else (list(view.heads[0]), view.heads[1]))
        if self.inner.observes:
            self.inner.observe(view)

    def select(self, chunk):
        sel = self.inner.select(chunk)
        self.selected[chunk.index] = sel
        return sel
