"""The language model's attention function while the engine runs it.

Registered with transformers' ``AttentionInterface`` under :data:`ATTENTION_NAME` and
selected for the text model only (``attn_implementation={"text_config": ATTENTION_NAME}``),
so no model forward is replaced. Called with ``retake_ctx`` (an engine step context) it:

1. lets the context observe the layer's post-RoPE queries and full keys (methods score
   tokens from them; nothing of size queries x cache is materialised for that);
2. runs SDPA with causal alignment at the bottom-right corner: query i of ``q_len`` sees key
   j iff ``j <= k_len - q_len + i``. Layers may hold caches of different lengths; each
   layer's mask follows its own ``k_len``.

Called without ``retake_ctx`` it is plain transformers SDPA with the model's own mask, so
a model loaded by :func:`retake.models.load_adapter` still works as an ordinary model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from ..rope import rotate
from . import profile

ATTENTION_NAME = "retake_sdpa"
_registered = False


class StopForward(Exception):
    """Raised by the attention function after the last layer a scoring pass needs: the rest of
    that forward is skipped (its cache entries are discarded by the engine)."""


def _cpu_attention_lse(query, key, value, is_causal: bool, scale):
    """CPU flash attention with its log-sum-exp: ``([B, H, q, d], [B, H, q])``."""
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, is_causal, scale=scale)[:2]


def _merge(parts):
    """Attention outputs over disjoint key sets merged by their log-sum-exps:
    ``[(out [B, H, q, d], lse [B, H, q]), ...] -> [B, H, q, d]``."""
    m = parts[0][1]
    for _, lse in parts[1:]:
        m = torch.maximum(m, lse)
    num, den = 0, 0
    for o, lse in parts:
        w = torch.exp(lse - m)
        num = num + o * w.unsqueeze(-1)
        den = den + w
    return num / den.unsqueeze(-1)


def split_causal_sdpa(query, key, value, scale):
    """Bottom-right causal attention as two unmasked kernels merged by log-sum-exp: the
    queries over the cache before them (no mask) and over their own block (the square
    ``is_causal`` kernel, which skips masked blocks). The CPU kernels otherwise materialise
    the ``q x k`` mask and compute every masked block (``docs/performance.md``).

    Grouped-query heads without repeating the cache (the private kernel has no grouped-query
    support): over the cache no query sees a mask, so a KV head's ``rep`` query heads are
    stacked along the queries, ``[B, H_kv, rep * q, d]``, against that head's keys once; only
    the block's own ``q`` keys are repeated for its causal part."""
    B, H, q_len, d = query.shape
    H_kv, k_len = key.shape[1], key.shape[-2]
    rep = H // H_kv
    past = k_len - q_len
    stacked = query.reshape(B, H_kv, rep * q_len, d)  # query head h = KV head h // rep (repeat_interleave's order)
    o1, l1 = _cpu_attention_lse(stacked, key[:, :, :past], value[:, :, :past], False, scale)
    o1, l1 = o1.reshape(B, H, q_len, value.shape[-1]), l1.reshape(B, H, q_len)
    k_own, v_own = key[:, :, past:], value[:, :, past:]
    if rep > 1:
        k_own, v_own = k_own.repeat_interleave(rep, 1), v_own.repeat_interleave(rep, 1)
    o2, l2 = _cpu_attention_lse(query, k_own, v_own, True, scale)
    return _merge([(o1, l1), (o2, l2)]).to(query.dtype)


def ragged_causal_sdpa(query, key, value, scale, head_lengths: list[int], ragged_end: int):
    """:func:`causal_sdpa` over a per-KV-head cache (``engine.cache``): KV head h holds
    entries ``[0, head_lengths[h])`` of the first ``ragged_end`` and the whole dense tail after
    them; the padding between is never read. Head by head: on CPU, a chunk whose tail is its
    own block runs the split kernel over two views (nothing copied); otherwise the head's
    entries are gathered and attended as a dense cache. query ``[B, H, q, d]``, key/value
    ``[B, H_kv, k, d]`` -> ``[B, H, q, d]``."""
    B, H, q_len, d = query.shape
    H_kv = key.shape[1]
    rep = H // H_kv
    split = query.device.type == "cpu" and query.dtype in (torch.float32, torch.float64, torch.bfloat16) \
        and key.shape[-2] - ragged_end == q_len and q_len > 1
    outs = []
    for h in range(H_kv):
        q_h = query[:, h * rep : (h + 1) * rep]
        n = head_lengths[h]
        k_past, v_past = key[:, h : h + 1, :n], value[:, h : h + 1, :n]
        k_tail, v_tail = key[:, h : h + 1, ragged_end:], value[:, h : h + 1, ragged_end:]
        if split and n > 0:
            parts = [_cpu_attention_lse(q_h.reshape(B, 1, rep * q_len, d), k_past, v_past, False, scale)]
            parts[0] = (parts[0][0].reshape(B, rep, q_len, -1), parts[0][1].reshape(B, rep, q_len))
            k_own, v_own = k_tail.repeat(1, rep, 1, 1), v_tail.repeat(1, rep, 1, 1)
            parts.append(_cpu_attention_lse(q_h, k_own, v_own, True, scale))
            outs.append(_merge(parts).to(query.dtype))
        else:
            k_h = torch.cat([k_past, k_tail], dim=-2)
            v_h = torch.cat([v_past, v_tail], dim=-2)
            outs.append(causal_sdpa(q_h, k_h, v_h, scale))
    return torch.cat(outs, dim=1)


def causal_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float | None) -> torch.Tensor:
    """SDPA, bottom-right causal. query ``[B, H, q, d]``, key/value ``[B, H_kv, k, d]``
    (grouped-query heads allowed). Returns ``[B, H, q, d]``. On CPU a chunk over a cache
    (``1 < q < k``) takes :func:`split_causal_sdpa`; CUDA's kernels take the bottom-right
    mask natively."""
    q_len, k_len = query.shape[-2], key.shape[-2]
    if k_len < q_len:
        raise ValueError(f"attention with more queries ({q_len}) than keys ({k_len})")
    gqa = query.shape[1] != key.shape[1]
    if 1 < q_len < k_len and query.device.type == "cpu" and query.dtype in (torch.float32, torch.float64, torch.bfloat16):
        return split_causal_sdpa(query, key, value, scale)
    if q_len == 1:
        mask, is_causal = None, False  # the newest token sees everything
    elif q_len == k_len:
        mask, is_causal = None, True
    else:
        mask, is_causal = causal_lower_right(q_len, k_len), False
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=gqa)


def retake_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, retake_ctx=None, **kwargs):
    if retake_ctx is None and getattr(key, "retake_heads", None) is not None:
        retake_ctx = PLAIN_CONTEXT  # a per-head cache is only read through its own masks
    if retake_ctx is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    layer = module.layer_idx
    kv_index = getattr(retake_ctx, "kv_index", None)
    if kv_index is not None:  # a hybrid model: the methods number the layers that hold KV
        layer = kv_index[layer]
    rot = retake_ctx.rotations.get(layer) if retake_ctx.rotations else None
    if rot is not None:  # reforged positions: the layer's own ids (the cache rotated the keys)
        query = rotate(query, rot)
    if retake_ctx.method is not None and retake_ctx.method.observes:
        with profile.part("observe"):
            retake_ctx.observe(layer, query, key, value, scaling)
    if retake_ctx.stop_after is not None and layer >= retake_ctx.stop_after:
        raise StopForward
    with profile.part("attention"):
        heads = getattr(key, "retake_heads", None)  # a per-KV-head layer (engine.cache)
        if heads is not None:
            out = ragged_causal_sdpa(query, key, value, scaling, *heads)
        else:
            out = causal_sdpa(query, key, value, scaling)
    return out.transpose(1, 2).contiguous(), None


class _Plain:
    rotations = None
    method = None
    stop_after = None


PLAIN_CONTEXT = _Plain()


def register_attention() -> None:
    """Make :data:`ATTENTION_NAME` known to transformers (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, retake_attention)
    # used only when the model runs outside the engine (no retake_ctx): ordinary SDPA masks
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    _registered = True


class RowLimit:
    """Hooks on a module (the last decoder layer's MLP) that, while ``rows`` is set, compute it
    on the first ``rows`` rows of its input only and give zeros for the rest: the guide's rows
    there feed nothing any method reads (a chunk forward's output is discarded, the guide's
    entries are dropped). Off (``rows = None``) the module runs as usual."""

    def __init__(self, module: torch.nn.Module):
        self.rows: int | None = None
        self._full = 0
        module.register_forward_pre_hook(self._before)
        module.register_forward_hook(self._after)

    def _before(self, module, args):
        if self.rows is None:
            return None
        x = args[0]
        self._full = x.shape[-2]
        return (x[..., : self.rows, :], *args[1:])

    def _after(self, module, args, output):
        if self.rows is None or self._full <= self.rows:
            return None
        pad = output.new_zeros(*output.shape[:-2], self._full - self.rows, output.shape[-1])
        return torch.cat([output, pad], dim=-2)

