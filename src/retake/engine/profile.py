"""Opt-in timers for the engine's parts: where a prefill's time goes (``make bench``'s
component split, ``docs/performance.md`` §1).

Off by default: :func:`part` is then a shared no-op context and costs one global lookup.
Under ``with profiling() as prof:`` the engine adds up wall seconds per part in
``prof.seconds``, keyed by the path of nested parts (``chunks/attention``: attention inside a
chunk's forward; ``prefix/attention``: in the prefix's); on CUDA each part synchronises the devices it was given before and after
(so the figures are real, and the run is slower than an unprofiled one).

Parts: ``vision`` (the encoder), ``prefix``, ``scoring_pass`` (two-pass methods), ``chunks``
(every chunk's forward through the layers, attention and observation included),
``attention`` (the attention kernel, inside ``chunks`` / ``prefix`` / ``suffix``),
``observe`` (the method reading a layer's view, inside ``chunks``), ``select`` (the method's
selection after a chunk), ``compaction`` (dropping the guide's entries and compressing the
cache), ``suffix`` and ``decode``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext

import torch

_NULL = nullcontext()
ACTIVE: "Profile | None" = None


class Profile:
    def __init__(self, devices: list | None = None):
        self.devices = [d for d in (devices or []) if torch.device(d).type == "cuda"]
        self.seconds: dict[str, float] = defaultdict(float)  # by path: "chunks/attention" is attention in a chunk
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[str] = []

    def _sync(self) -> None:
        for d in self.devices:
            torch.cuda.synchronize(d)

    @contextmanager
    def part(self, name: str):
        self._stack.append(name)
        key = "/".join(self._stack)
        self._sync()
        t = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[key] += time.perf_counter() - t
            self.calls[key] += 1
            self._stack.pop()

    def total(self, name: str) -> float:
        """Seconds of ``name`` wherever it ran (``attention`` in the prefix, chunks, suffix, ...)."""
        return sum(v for k, v in self.seconds.items() if k.split("/")[-1] == name)


def part(name: str):
    """A context timing ``name`` when profiling is on (a no-op otherwise)."""
    return _NULL if ACTIVE is None else ACTIVE.part(name)


@contextmanager
def profiling(devices: list | None = None):
    """Collect the engine's part timings of everything run inside (not re-entrant)."""
    global ACTIVE
    if ACTIVE is not None:
        raise RuntimeError("profiling is already on")
    ACTIVE = Profile(devices)
    try:
        yield ACTIVE
    finally:
        ACTIVE = None
