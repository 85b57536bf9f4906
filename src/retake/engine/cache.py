"""A KV cache whose layers can be compressed independently.

A ``transformers`` cache (so the model appends to it as usual, and each layer's tensors live
on that layer's device) with the operations the engine needs between chunks: drop the
guide's entries, keep an index set of the newest chunk's (or the whole video's) entries, and
count what is held. Layers may hold different lengths.

Each layer keeps its keys and values in a buffer with room to grow (:class:`BufferedLayer`):
appending writes into the buffer instead of concatenating a new copy of the whole layer per
chunk, dropping entries only moves the length, and compressing gathers the kept entries into
place. The buffer grows by a quarter when full (a copy then, and a quarter of slack at most);
``layer.keys`` / ``layer.values`` are views of its used part, as a ``DynamicLayer``'s tensors.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from ..methods.base import LayerKeep
from ..rope import rotate

GROWTH = 1.25  # a full buffer grows to this times what it must hold
ROUND = 64  # capacities are multiples of this many entries


class BufferedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose tensors are views ``[..., :length, :]`` of preallocated buffers.
    Assigning ``keys`` / ``values`` (as ``DynamicLayer``'s own methods do) makes the assigned
    tensor the buffer."""

    def __init__(self):
        self._kbuf = self._vbuf = None
        self.length = 0
        super().__init__()

    # the used part of the buffers, as DynamicLayer's attributes (before the first write: the
    # buffer as assigned, None or the empty tensor of lazy_initialization)
    @property
    def keys(self):
        return self._kbuf if self._kbuf is None or self._kbuf.dim() < 2 else self._kbuf[..., : self.length, :]

    @keys.setter
    def keys(self, tensor):
        self._kbuf = tensor
        self.length = 0 if tensor is None or tensor.dim() < 2 else int(tensor.shape[-2])

    @property
    def values(self):
        return self._vbuf if self._vbuf is None or self._vbuf.dim() < 2 else self._vbuf[..., : self.length, :]

    @values.setter
    def values(self, tensor):
        self._vbuf = tensor

    @property
    def capacity(self) -> int:
        return 0 if self._kbuf is None or self._kbuf.dim() < 2 else int(self._kbuf.shape[-2])

    def reserve(self, entries: int, like_keys: torch.Tensor, like_values: torch.Tensor) -> None:
        """Room for ``entries`` entries shaped like ``like_keys`` / ``like_values`` ``[B, H, n, d]``
        (the used part is kept)."""
        if entries <= self.capacity:
            return
        cap = -(-max(entries, int(GROWTH * entries)) // ROUND) * ROUND
        kbuf = like_keys.new_empty(*like_keys.shape[:-2], cap, like_keys.shape[-1])
        vbuf = like_values.new_empty(*like_values.shape[:-2], cap, like_values.shape[-1])
        n = self.length
        if n:
            kbuf[..., :n, :] = self._kbuf[..., :n, :]
            vbuf[..., :n, :] = self._vbuf[..., :n, :]
        self._kbuf, self._vbuf, self.length = kbuf, vbuf, n

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, start = key_states.shape[-2], self.length
        self.reserve(start + n, key_states, value_states)
        self._kbuf[..., start : start + n, :] = key_states
        self._vbuf[..., start : start + n, :] = value_states
        self.length = start + n
        return self.keys, self.values


class CompressibleCache(DynamicCache):
    """``input_rotation`` (set by the engine per forward when positions are reforged): layer ->
    pure rotation ``(cos, sin)`` applied to that layer's incoming keys before they are stored,
    moving them from the model's ids to the layer's own ids (see ``engine.positions``)."""

    input_rotation: dict | None = None

    def __init__(self):
        super().__init__()
        self.layer_class_to_replicate = BufferedLayer

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        rot = self.input_rotation.get(layer_idx) if self.input_rotation else None
        if rot is not None:
            key_states = rotate(key_states, rot)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    def layer_length(self, layer: int) -> int:
        return self.layers[layer].length if layer < len(self.layers) else 0

    def lengths(self) -> list[int]:
        return [self.layer_length(i) for i in range(len(self.layers))]

    def truncate(self, layer: int, length: int) -> None:
        """Keep the first ``length`` entries of ``layer`` (nothing is copied)."""
        self.layers[layer].length = min(self.layers[layer].length, length)

    def keep(self, layer: int, start: int, keep: LayerKeep) -> None:
        """Keep entries ``[0, start)`` and, of the entries from ``start`` on (the newest chunk,
        or every video entry for a ``scope="video"`` keep), those at ``keep.index``, optionally
        replaced by ``keep.keys/values``, followed by ``keep.extra_keys/values``: gathered into
        place in the layer's buffer."""
        lay = self.layers[layer]
        keys, values = lay.keys, lay.values
        dev = keys.device
        idx = keep.index.to(dev)
        k_new = keys[..., start:, :].index_select(-2, idx) if keep.keys is None else keep.keys.to(dev, keys.dtype)[None]
        v_new = values[..., start:, :].index_select(-2, idx) if keep.values is None else keep.values.to(dev, values.dtype)[None]
        k = int(idx.numel())
        e = keep.num_extra
        lay.reserve(start + k + e, keys, values)
        lay._kbuf[..., start : start + k, :] = k_new
        lay._vbuf[..., start : start + k, :] = v_new
        if e:
            lay._kbuf[..., start + k : start + k + e, :] = keep.extra_keys.to(dev, keys.dtype)[None]
            lay._vbuf[..., start + k : start + k + e, :] = keep.extra_values.to(dev, values.dtype)[None]
        lay.length = start + k + e

    def snapshot(self) -> list[int]:
        """What :meth:`restore` needs to bring the cache back to this point: the lengths. The
        engine never writes into entries it holds once the video is prefilled (a question
        and its answer are appended after them), so the entries themselves stay valid."""
        return self.lengths()

    def restore(self, snapshot: list[int]) -> None:
        """Back to the point of ``snapshot``: entries added since (a question and its answer) are gone."""
        if len(snapshot) != len(self.layers):
            raise ValueError(f"snapshot of {len(snapshot)} layers for a cache of {len(self.layers)}")
        for lay, n in zip(self.layers, snapshot):
            if n > lay.length:
                raise ValueError("the cache holds fewer entries than the snapshot: it was compressed since")
            lay.length = n

    def rotate(self, layer: int, start: int, count: int, rot) -> None:
        """Rotate the keys of entries ``[start, start + count)`` by a pure rotation ``[count, d]``."""
        keys = self.layers[layer].keys
        keys[..., start : start + count, :] = rotate(keys[..., start : start + count, :], rot)

    def nbytes(self) -> int:
        """Bytes of the entries held (a buffer's spare room not counted: ``allocated_bytes``)."""
        total = 0
        for lay in self.layers:
            if lay.length:
                total += lay.keys.numel() * lay.keys.element_size() + lay.values.numel() * lay.values.element_size()
        return total

    def allocated_bytes(self) -> int:
        """Bytes of the layers' buffers, spare room included."""
        total = 0
        for lay in self.layers:
            for buf in (getattr(lay, "_kbuf", None), getattr(lay, "_vbuf", None)):
                if buf is not None:
                    total += buf.numel() * buf.element_size()
        return total
