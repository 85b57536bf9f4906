"""RoPE arithmetic shared by adapters, the engine and methods (family-agnostic: cos/sin come
from the adapter).

cos/sin as models apply them may carry an attention factor (YaRN's ``mscale``):
``cos = m cos(theta)``, ``sin = m sin(theta)``. :func:`unapply_rope` is the exact inverse of
:func:`apply_rope` for any such factor, and :func:`rotation` strips it, giving a pure rotation
(rotating an already rotated vector by ``delta`` equals rotating the original by ``p + delta``:
angles are linear in the position, per row of M-RoPE alike).
"""

from __future__ import annotations

import torch


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``[..., S, D]`` by cos/sin ``[S, R]``: the first ``R <= D`` dims (partial rotary,
    Qwen3.5's 1/4 of the head, as transformers applies it), the rest pass through."""
    r = cos.shape[-1]
    if r < x.shape[-1]:
        return torch.cat([apply_rope(x[..., :r], cos, sin), x[..., r:]], dim=-1)
    return x * cos + rotate_half(x) * sin


def unapply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`apply_rope`: rotation by the negative angle, divided by the squared
    attention factor ``cos^2 + sin^2`` (1 without YaRN); partial rotary alike."""
    r = cos.shape[-1]
    if r < x.shape[-1]:
        return torch.cat([unapply_rope(x[..., :r], cos, sin), x[..., r:]], dim=-1)
    return (x * cos - rotate_half(x) * sin) / (cos * cos + sin * sin)


def rotation(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin with any attention factor divided out: a pure rotation, fp32."""
    cos, sin = cos.float(), sin.float()
    m = torch.sqrt(cos * cos + sin * sin)
    return cos / m, sin / m


def rotate(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Apply a pure rotation (from :func:`rotation`) in fp32, keeping ``x``'s dtype."""
    cos, sin = rot
    return apply_rope(x.float(), cos.to(x.device), sin.to(x.device)).to(x.dtype)
