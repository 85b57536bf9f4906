"""A KV cache whose layers can be compressed independently.

A ``transformers.DynamicCache`` (so the model appends to it as usual, and each layer's
tensors live on that layer's device) with the operations the engine needs between
chunks: drop the guide's entries, keep an index set of the newest chunk's entries, and
count what is held. Layers may hold different lengths.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from ..methods.base import LayerKeep
from ..rope import rotate


class CompressibleCache(DynamicCache):
    """``input_rotation`` (set by the engine per forward when positions are reforged): layer ->
    pure rotation ``(cos, sin)`` applied to that layer's incoming keys before they are stored,
    moving them from the model's ids to the layer's own ids (see ``engine.positions``)."""

    input_rotation: dict | None = None

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        rot = self.input_rotation.get(layer_idx) if self.input_rotation else None
        if rot is not None:
            key_states = rotate(key_states, rot)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

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

    def keep(self, layer: int, start: int, keep: LayerKeep) -> None:
        """Keep entries ``[0, start)`` and, of the entries from ``start`` on (the newest chunk,
        or every video entry for a ``scope="video"`` keep), those at ``keep.index``, optionally replaced by ``keep.keys/values``, followed
        by ``keep.extra_keys/values``."""
        lay = self.layers[layer]
        dev = lay.keys.device
        idx = keep.index.to(dev)
        k_new = lay.keys[..., start:, :].index_select(-2, idx) if keep.keys is None else keep.keys.to(dev, lay.keys.dtype)[None]
        v_new = lay.values[..., start:, :].index_select(-2, idx) if keep.values is None else keep.values.to(dev, lay.values.dtype)[None]
        ks, vs = [lay.keys[..., :start, :], k_new], [lay.values[..., :start, :], v_new]
        if keep.extra_keys is not None:
            ks.append(keep.extra_keys.to(dev, lay.keys.dtype)[None])
            vs.append(keep.extra_values.to(dev, lay.values.dtype)[None])
        lay.keys, lay.values = torch.cat(ks, dim=-2), torch.cat(vs, dim=-2)

    def snapshot(self) -> list:
        """What :meth:`restore` needs to bring the cache back to this point. The engine never
        writes into entries it holds (appending and compressing make new tensors; rotating a
        chunk's keys happens before a snapshot is taken), so keeping the tensors is enough."""
        return [(lay.keys, lay.values) for lay in self.layers]

    def restore(self, snapshot: list) -> None:
        """Back to the point of ``snapshot``: entries added since (a question and its answer) are gone."""
        if len(snapshot) != len(self.layers):
            raise ValueError(f"snapshot of {len(snapshot)} layers for a cache of {len(self.layers)}")
        for lay, (k, v) in zip(self.layers, snapshot):
            lay.keys, lay.values = k, v

    def rotate(self, layer: int, start: int, count: int, rot) -> None:
        """Rotate the keys of entries ``[start, start + count)`` by a pure rotation ``[count, d]``."""
        keys = self.layers[layer].keys
        keys[..., start : start + count, :] = rotate(keys[..., start : start + count, :], rot)

    def nbytes(self) -> int:
        total = 0
        for lay in self.layers:
            if lay.keys is not None:
                total += lay.keys.numel() * lay.keys.element_size() + lay.values.numel() * lay.values.element_size()
        return total
