"""``none``: no compression. Chunked prefill keeps every token, which must reproduce one
ordinary forward pass of the model exactly (the engine's first test)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import ChunkSpan, Method


@dataclass
class NoCompression(Method):
    name = "none"
    uses_guide = False  # the guide's KV is dropped anyway; skipping it changes nothing
    question_aware = False
    observes = False

    def select(self, chunk: ChunkSpan):
        return [None] * self.plan.num_layers
