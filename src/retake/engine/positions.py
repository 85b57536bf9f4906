"""Position reforging (``EngineConfig.reforge_positions``; docs/methods.md, "Model options used by the methods").

After a chunk is compressed in a layer, the kept tokens' temporal ids (row 0 of the position
ids; the only row for 1-D RoPE) are compressed by the layer's keep ratio
``t' = t_min + floor((t - t_min) * k / n)`` and their keys re-rotated to ``t'``. Every layer's
temporal ids stay continuous across chunks: the next chunk starts, in that layer, at
``max(t_min + floor(span * k / n), max(t') + 1)`` (``span`` = the chunk's original temporal
extent), so later chunks, the suffix and decoding run at per-layer positions.

Layers hold different numbers of tokens, so their positions differ inside one forward. The
model computes one rotation for all layers from the input's original ids; this module gives,
per layer, the extra rotation by ``layer ids - original ids`` that the cache applies to the
incoming keys and the attention function to the queries. Rotations compose exactly (angles
are linear in the ids), so this equals running the layer at its own ids. Layers whose ids
equal the original ones get no rotation: with nothing compressed the engine is unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..rope import rotation

Rotation = tuple[torch.Tensor, torch.Tensor]


class ReforgedPositions:
    """Per-layer temporal-id state.

    rope: the adapter's ``rope(position_ids [R, S], like) -> cos, sin [S, d]``.
    shift[l]: original temporal id - layer temporal id for the video still to come.
    max_id[l]: the largest id (any row) the layer holds so far.
    """

    def __init__(self, num_layers: int, rows: int, prefix_max_id: int, rope: Callable):
        self.rope, self.rows = rope, rows
        self.shift = [0] * num_layers
        self.max_id = [prefix_max_id] * num_layers

    def _rotation(self, delta: torch.Tensor, like: torch.Tensor) -> Rotation | None:
        """Pure rotation by ``delta [R, S]`` ids, None when it is zero."""
        if not bool(delta.any()):
            return None
        return rotation(*self.rope(delta, torch.ones(1, device=like.device)))  # fp32 angles

    def chunk(self, video_pos: torch.Tensor, guide_pos: torch.Tensor | None, like: torch.Tensor):
        """Positions of ``[chunk ; guide]`` in every layer and the rotation from the original
        input positions to them. video_pos ``[R, n]`` original ids of the fed chunk tokens;
        guide_pos ``[R, g]`` the guide's ids as placed after the chunk in original ids.
        Returns ``(positions {layer: [R, n+g]}, rotations {layer: (cos, sin) or None})``."""
        orig = video_pos if guide_pos is None else torch.cat([video_pos, guide_pos], dim=1)
        positions, rotations, by_shift = {}, {}, {}
        for layer, s in enumerate(self.shift):
            if s not in by_shift:
                v = video_pos.clone()
                v[0] -= s
                if guide_pos is not None:  # the guide right after the chunk, in this layer's ids
                    v = torch.cat([v, guide_pos + (int(v.max()) + 1 - int(guide_pos[0, 0]))], dim=1)
                by_shift[s] = (v, self._rotation(v - orig, like))
            positions[layer], rotations[layer] = by_shift[s]
        return positions, rotations

    def compress(self, layer: int, video_pos: torch.Tensor, index: torch.Tensor | None, span: tuple[int, int],
                 like: torch.Tensor) -> Rotation | None:
        """After chunk compression in ``layer``: reforge the kept tokens' temporal ids, update
        the layer's state, and return the rotation for the kept keys (None if unchanged).
        video_pos ``[R, n]`` the chunk's ids in this layer; index: kept indices (None: all);
        span: the chunk's original (first temporal id, next chunk's first temporal id)."""
        n = video_pos.shape[1]
        kept = video_pos if index is None else video_pos[:, index.cpu()]
        k = kept.shape[1]
        t = kept[0]
        t_min = int(video_pos[0].min())
        new = kept.clone()
        new[0] = t_min + torch.div((t - t_min) * k, n, rounding_mode="floor")
        start, end = span
        nxt = max(t_min + ((end - start) * k) // n, int(new[0].max()) + 1 if k else t_min)
        self.shift[layer] = end - nxt
        if k:
            self.max_id[layer] = max(self.max_id[layer], int(new.max()))
        delta = new - kept
        return self._rotation(delta, like)

    def text(self, first_id: int, like: torch.Tensor) -> dict[int, Rotation | None]:
        """Rotations for text after the video (suffix, then decoding): in each layer it starts
        at the layer's largest id + 1 instead of ``first_id``. A constant shift of every row is
        the same rotation for every token, so one ``[1, d]`` rotation per layer serves all."""
        out, by_delta = {}, {}
        for layer, m in enumerate(self.max_id):
            d = m + 1 - first_id
            if d not in by_delta:
                by_delta[d] = self._rotation(torch.full((self.rows, 1), d, dtype=torch.long), like)
            out[layer] = by_delta[d]
        return out
