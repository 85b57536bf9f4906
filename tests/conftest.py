"""Shared fixtures: tiny checkpoints of both architectures, written to disk and loaded the
way a real checkpoint is, and small videos written with PyAV."""

from __future__ import annotations

import pytest
import torch

from retake.models import load_adapter
from retake.tiny import TINY_ARCHS, write_tiny_model
from retake.video import load_video, write_test_video

torch.set_num_threads(1)  # two xdist workers share two cores


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {arch: write_tiny_model(arch, root / arch, seed=0) for arch in TINY_ARCHS}


@pytest.fixture(scope="session", params=TINY_ARCHS)
def arch(request):
    return request.param


@pytest.fixture(scope="session")
def adapters(tiny_dirs):
    return {arch: load_adapter(path, dtype="float32", device="cpu") for arch, path in tiny_dirs.items()}


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


class Recorder:
    """Wraps a method: records what every layer showed it (q, k, v of the input and the
    cache, positions, rotation) and what it selected, so tests can recompute its scores
    independently of its code."""

    def __init__(self, inner):
        self.inner, self.views, self.selected = inner, [], []
        self.name = inner.name

    @property
    def uses_guide(self):  # a method may switch these in begin()
        return self.inner.uses_guide

    @property
    def observes(self):
        return True

    def begin(self, plan):
        self.inner.begin(plan)
        self.plan = plan

    def observe(self, view):
        self.views.append((view.chunk.index, view.layer, view.query.clone(), view.key.clone(), view.num_chunk,
                           view.num_guide, view.scaling, view.positions.clone(), view.rope()))
        if self.inner.observes:
            self.inner.observe(view)

    def select(self, chunk):
        sel = self.inner.select(chunk)
        self.selected.append(sel)
        return sel
