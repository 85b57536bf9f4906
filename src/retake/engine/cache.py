"""A KV cache whose layers can be compressed independently.

A ``transformers.DynamicCache`` (so the model appends to it as usual, and each layer's
tensors live on that layer's device) with the operations the engine needs between
chunks: drop the guide's entries, keep an index set of the newest chunk's entries, and
count what is held. Layers may hold different lengths.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


class CompressibleCache(DynamicCache):
    def layer_length(self, layer: int) -> int:
        if layer >= len(self.layers) or self.layers[layer].keys is None:
            return 0
        return int(self.layers[layer].keys.shape[-2])

    def lengths(self) -> list[int]:
        return [self.layer_length(i) for i in range(len(self.layers))]

    def truncate(self, layer: int, length: int) -> None:
        """Keep the first ``length`` entries of ``layer``."""
        lay = self.layers[layer]
        lay.keys = lay.keys[..., :length, :]
        lay.values = lay.values[..., :length, :]

    def keep(self, layer: int, start: int, index: torch.Tensor) -> None:
        """Keep entries ``[0, start)`` and ``start + index`` (index sorted, relative to start)."""
        lay = self.layers[layer]
        idx = index.to(lay.keys.device)
        lay.keys = torch.cat([lay.keys[..., :start, :], lay.keys[..., start:, :].index_select(-2, idx)], dim=-2)
        lay.values = torch.cat([lay.values[..., :start, :], lay.values[..., start:, :].index_select(-2, idx)], dim=-2)

    def nbytes(self) -> int:
        total = 0
        for lay in self.layers:
            if lay.keys is not None:
                total += lay.keys.numel() * lay.keys.element_size() + lay.values.numel() * lay.values.element_size()
        return total
