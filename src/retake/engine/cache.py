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

**Per-KV-head layers.** A method may keep a different token set in each KV head (SnapKV,
H2O, Ada-KV as their references do). Such a layer is *ragged*: its first ``ragged_end`` entries
hold head h's entries packed at ``[0, head_lengths[h])`` (the rest of that head's rows up to
``ragged_end`` are padding, never read), followed by a dense tail every head holds (the chunk
being prefilled, the question, the answer). The buffer spans the longest head; what is held is
counted per head (:meth:`CompressibleCache.nbytes`). The key tensor the cache hands to the
attention function carries ``retake_heads = (head_lengths, ragged_end)``, so the attention
(``engine.attention``) and the methods' scores never see a padded entry.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import Cache, DynamicLayer, LinearAttentionCacheLayerMixin, LinearAttentionLayer

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
        # ragged (per-KV-head) layers: entries each head holds in [0, ragged_end); None = dense
        self.head_lengths: list[int] | None = None
        self.ragged_end = 0
        super().__init__()

    @property
    def ragged(self) -> bool:
        return self.head_lengths is not None

    def set_head_lengths(self, lengths: list[int]) -> None:
        """Head h holds ``[0, lengths[h])``; the buffer spans the longest (dense when all equal)."""
        end = max(lengths)
        self.length = end
        if min(lengths) == end:
            self.head_lengths, self.ragged_end = None, 0
        else:
            self.head_lengths, self.ragged_end = list(lengths), end

    def entries_per_head(self) -> list[int]:
        """Entries each KV head holds (padding not counted)."""
        heads = 0 if self._kbuf is None or self._kbuf.dim() < 2 else int(self._kbuf.shape[-3])
        if not self.ragged:
            return [self.length] * heads
        tail = self.length - self.ragged_end
        return [n + tail for n in self.head_lengths]

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
        keys = self.keys
        if self.ragged:  # the attention function reads which entries each head holds from here
            keys.retake_heads = (self.head_lengths, self.ragged_end)
        return keys, self.values


class CompressibleCache(DynamicCache):
    """``input_rotation`` (set by the engine per forward when positions are reforged): layer ->
    pure rotation ``(cos, sin)`` applied to that layer's incoming keys before they are stored,
    moving them from the model's ids to the layer's own ids (see ``engine.positions``).

    **Hybrid models** (``layer_types``: Qwen3.5's Gated DeltaNet layers beside its attention
    layers): a ``"linear_attention"`` layer is transformers' own ``LinearAttentionLayer`` (a
    fixed-size causal-conv and recurrent state, never compressed), a ``"full_attention"`` layer
    a :class:`BufferedLayer`. ``self.layers`` stays in the model's order (the model updates them
    by its layer index); every method below that takes a ``layer`` takes the index of a layer
    that holds KV (0 .. ``num_kv_layers - 1``, the methods' layer ids), ``kv_ids`` maps it to the
    model's."""

    input_rotation: dict | None = None

    def __init__(self, layer_types: list[str] | None = None):
        super().__init__()
        self.layer_class_to_replicate = BufferedLayer
        self.kv_ids: list[int] | None = None
        if layer_types is not None and any(t != "full_attention" for t in layer_types):
            bad = sorted(set(layer_types) - {"full_attention", "linear_attention"})
            if bad:
                raise ValueError(f"layer types {bad} are not supported (full_attention, linear_attention)")
            Cache.__init__(self, layers=[BufferedLayer() if t == "full_attention" else LinearAttentionLayer()
                                         for t in layer_types])
            self.kv_ids = [i for i, t in enumerate(layer_types) if t == "full_attention"]

    # -- layers that hold KV (the methods' layer ids) -----------------------------------------
    @property
    def num_kv_layers(self) -> int:
        return len(self.kv_ids) if self.kv_ids is not None else len(self.layers)

    def kv_layer(self, layer: int):
        """The :class:`BufferedLayer` of KV layer ``layer`` (None before the model created it)."""
        i = self.kv_ids[layer] if self.kv_ids is not None else layer
        return self.layers[i] if i < len(self.layers) else None

    @property
    def kv_layers(self) -> list:
        return [self.kv_layer(i) for i in range(self.num_kv_layers)]

    @property
    def state_layers(self) -> list:
        """The linear-attention layers (hybrid models): their states absorb every token fed."""
        return [lay for lay in self.layers if isinstance(lay, LinearAttentionCacheLayerMixin)]

    def save_states(self) -> list:
        """Copies of the linear-attention layers' conv and recurrent states (:meth:`load_states`
        puts them back: a forward whose tokens must leave no trace in them, e.g. the guide)."""
        out = []
        for lay in self.state_layers:
            out.append(({i: (None if c is None else c.clone()) for i, c in lay.conv_states.items()},
                        {i: (None if r is None else r.clone()) for i, r in lay.recurrent_states.items()},
                        dict(lay.has_previous_state)))
        return out

    def load_states(self, saved: list) -> None:
        for lay, (conv, rec, prev) in zip(self.state_layers, saved):
            for store, old in ((lay.conv_states, conv), (lay.recurrent_states, rec)):
                for i, x in old.items():
                    if x is None:
                        continue
                    if store[i] is None or store[i].shape != x.shape:
                        store[i] = x.clone()
                    else:
                        store[i].copy_(x)  # in place: the layer keeps its tensors' addresses
            lay.has_previous_state = dict(prev)
            if not any(prev.values()):  # back to before the first token: as a fresh layer
                lay.conv_states = dict.fromkeys(lay.conv_states)
                lay.recurrent_states = dict.fromkeys(lay.recurrent_states)
                lay.is_conv_states_initialized = dict.fromkeys(lay.is_conv_states_initialized, False)
                lay.is_recurrent_states_initialized = dict.fromkeys(lay.is_recurrent_states_initialized, False)

    def state_nbytes(self) -> int:
        """Bytes of the linear-attention layers' states (fixed: they do not grow with the video)."""
        total = 0
        for lay in self.state_layers:
            for x in (*lay.conv_states.values(), *lay.recurrent_states.values()):
                if x is not None:
                    total += x.numel() * x.element_size()
        return total

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        rot = self.input_rotation.get(layer_idx) if self.input_rotation else None
        if rot is not None:
            key_states = rotate(key_states, rot)
        return super().update(key_states, value_states, layer_idx, *args, **kwargs)

    def layer_length(self, layer: int) -> int:
        lay = self.kv_layer(layer)
        return 0 if lay is None else lay.length

    def lengths(self) -> list[int]:
        return [self.layer_length(i) for i in range(self.num_kv_layers)]

    def truncate(self, layer: int, length: int) -> None:
        """Keep the first ``length`` entries of ``layer`` (nothing is copied)."""
        lay = self.kv_layer(layer)
        lay.length = min(lay.length, length)
        if lay.ragged and lay.length < lay.ragged_end:
            lay.set_head_lengths([min(n, lay.length) for n in lay.head_lengths])

    def heads(self, layer: int) -> tuple[list[int], int] | None:
        """``(head_lengths, ragged_end)`` of a ragged layer, None for a dense one."""
        lay = self.kv_layer(layer)
        return (lay.head_lengths, lay.ragged_end) if lay.ragged else None

    def held(self, layer: int) -> float | int:
        """Entries the layer holds per KV head (the mean over heads for a ragged layer)."""
        lay = self.kv_layer(layer)
        if lay is None:
            return 0
        if not lay.ragged:
            return lay.length
        per = lay.entries_per_head()
        return sum(per) / len(per)

    def held_max(self, layer: int) -> int:
        """Entries of the layer's fullest KV head."""
        return self.layer_length(layer)

    def held_per_layer(self) -> list[float | int]:
        return [self.held(i) for i in range(self.num_kv_layers)]

    def keep(self, layer: int, start: int, keep: LayerKeep) -> None:
        """Keep entries ``[0, start)`` and, of the entries from ``start`` on (the newest chunk,
        or every video entry for a ``scope="video"`` keep), those at ``keep.index``, optionally
        replaced by ``keep.keys/values``, followed by ``keep.extra_keys/values``: gathered into
        place in the layer's buffer. A per-head keep (or any keep on a ragged layer) is gathered
        head by head (:meth:`keep_heads`)."""
        lay = self.kv_layer(layer)
        if keep.per_head or lay.ragged:
            return self.keep_heads(layer, start, keep)
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

    def keep_heads(self, layer: int, start: int, keep: LayerKeep) -> None:
        """:meth:`keep` head by head. KV head h keeps its entries before the chunk (on a ragged
        layer ``[0, head_lengths[h])`` and the dense entries every head holds up to ``start``),
        then, of the chunk's entries ``[start, length)``, those at ``keep.head_index(h)``, packed
        in place. ``scope="video"``: of the head's own video entries (``[start,
        head_lengths[h])``, then the dense ones from ``ragged_end``), those at the index, from
        ``start`` on. Merged replacement entries need equal counts (``keys [H_kv, k, d]``);
        extra entries follow each head's kept ones."""
        lay = self.kv_layer(layer)
        keys, values = lay.keys, lay.values
        H = keys.shape[-3]
        dev = keys.device
        whole = keep.scope == "video"
        end = lay.ragged_end if lay.ragged else start  # where the entries every head holds begin
        held = lay.head_lengths if lay.ragged else [start] * H
        new_k, new_v = [], []
        for h in range(H):
            idx = keep.head_index(h, H).to(dev)
            k_all, v_all = keys[..., h, :, :], values[..., h, :, :]  # [B, length, d]
            if whole:  # the head's video entries, ragged part then dense part
                k_src = torch.cat([k_all[..., start : held[h], :], k_all[..., end:, :]], dim=-2)
                v_src = torch.cat([v_all[..., start : held[h], :], v_all[..., end:, :]], dim=-2)
                k_h, v_h = k_src.index_select(-2, idx), v_src.index_select(-2, idx)
            else:
                if keep.keys is not None:
                    k_h, v_h = keep.keys[h].to(dev, keys.dtype)[None], keep.values[h].to(dev, values.dtype)[None]
                else:
                    k_h, v_h = k_all[..., start:, :].index_select(-2, idx), v_all[..., start:, :].index_select(-2, idx)
                if start > end:  # dense entries after the ragged part that precede the chunk
                    k_h = torch.cat([k_all[..., end:start, :], k_h], dim=-2)
                    v_h = torch.cat([v_all[..., end:start, :], v_h], dim=-2)
            if keep.num_extra:
                k_h = torch.cat([k_h, keep.extra_keys[h].to(dev, keys.dtype)[None]], dim=-2)
                v_h = torch.cat([v_h, keep.extra_values[h].to(dev, values.dtype)[None]], dim=-2)
            new_k.append(k_h)  # gathered copies: writing them below cannot clobber a source
            new_v.append(v_h)
        base = [start] * H if whole else held
        lengths = [b + int(k.shape[-2]) for b, k in zip(base, new_k)]
        lay.reserve(max(lengths), keys, values)
        for h in range(H):
            lay._kbuf[..., h, base[h] : lengths[h], :] = new_k[h]
            lay._vbuf[..., h, base[h] : lengths[h], :] = new_v[h]
        lay.set_head_lengths(lengths)

    def snapshot(self) -> list:
        """What :meth:`restore` needs to bring the cache back to this point: each layer's length
        (and per-head lengths). The engine never writes into entries it holds once the video is
        prefilled (a question and its answer are appended after them), so the entries themselves
        stay valid."""
        return [(lay.length, lay.head_lengths, lay.ragged_end) for lay in self.kv_layers], self.save_states()

    def restore(self, snapshot) -> None:
        """Back to the point of ``snapshot``: entries added since (a question and its answer) are
        gone, and the linear-attention states are those of the snapshot."""
        kv, states = snapshot
        if len(kv) != self.num_kv_layers:
            raise ValueError(f"snapshot of {len(kv)} layers for a cache of {self.num_kv_layers}")
        self.load_states(states)
        for lay, (n, heads, end) in zip(self.kv_layers, kv):
            if n > lay.length or heads != lay.head_lengths:
                raise ValueError("the cache holds fewer entries than the snapshot: it was compressed since")
            lay.length, lay.ragged_end = n, end

    def rotate(self, layer: int, start: int, count: int, rot) -> None:
        """Rotate the keys of entries ``[start, start + count)`` by a pure rotation ``[count, d]``."""
        keys = self.kv_layer(layer).keys
        keys[..., start : start + count, :] = rotate(keys[..., start : start + count, :], rot)

    def nbytes(self) -> int:
        """Bytes of the entries held, counted per KV head (a ragged layer's padding and a
        buffer's spare room not counted: ``allocated_bytes``)."""
        total = 0
        for lay in self.kv_layers:
            if lay is not None and lay.length:
                k, v = lay.keys, lay.values
                per_entry = (k[..., :1, :].numel() * k.element_size() + v[..., :1, :].numel() * v.element_size()) \
                    // k.shape[-3]  # one entry of one head, keys and values
                total += per_entry * sum(lay.entries_per_head())
        return total

    def allocated_bytes(self) -> int:
        """Bytes of the layers' buffers, spare room included."""
        total = 0
        for lay in self.layers:
            for buf in (getattr(lay, "_kbuf", None), getattr(lay, "_vbuf", None)):
                if buf is not None:
                    total += buf.numel() * buf.element_size()
        return total
