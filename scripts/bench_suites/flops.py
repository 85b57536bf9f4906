"""The prefill FLOP count: a method wrapper that times the method and records what each chunk
fed and kept per layer, and the matmul + attention FLOPs of the prefill from it."""

from __future__ import annotations

import time

from .common import sync


class Timed:
    """Wraps a method and adds up the seconds of its begin / observe / select calls."""

    def __init__(self, inner, device):
        self.inner, self.device, self.seconds = inner, device, 0.0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def _time(self, fn, *a):
        sync(self.device)
        t = time.perf_counter()
        out = fn(*a)
        sync(self.device)
        self.seconds += time.perf_counter() - t
        return out

    def begin(self, plan):
        return self._time(self.inner.begin, plan)

    def observe(self, view):
        return self._time(self.inner.observe, view)

    def select(self, chunk):
        return self._time(self.inner.select, chunk)


class Recording(Timed):
    """Timed, and records what each chunk fed and kept per layer (for the FLOP count)."""

    def begin(self, plan):
        self.plan, self.fed, self.kept = plan, [], []
        return super().begin(plan)

    def select(self, chunk):
        sel = super().select(chunk)
        n = self.plan.fed(chunk)
        self.fed.append(n)
        from retake.methods import LayerKeep

        # entries per KV head (a [H_kv, k] index keeps k in every head)
        self.kept.append([n if k is None else (k if isinstance(k, LayerKeep) else LayerKeep(k)).num_entries for k in sel])
        return sel


def prefill_flops(cfg, prompt, video, rec: Recording, guide_tokens: int, fast_paths: bool = True) -> dict:
    """Matmul + attention FLOPs of one engine prefill (vision tower, prefix, every chunk with its
    guide, suffix), from the sizes and what each chunk kept in each layer. Elementwise ops,
    norms and RoPE are left out. Attention: 2 x 2 x heads x head_dim per (query, key) pair.
    ``fast_paths``: the guide's rows skip the last layer's MLP (the prefix run in the first
    chunk's forward costs the same FLOPs as run alone)."""
    t, v = cfg.text_config, cfg.vision_config
    d, hd, L = t.hidden_size, t.hidden_size // t.num_attention_heads, t.num_hidden_layers
    kv = t.num_key_value_heads * hd
    per_token = 2 * (d * (d + 2 * kv) + d * d + 3 * d * t.intermediate_size)  # qkv, o, gate/up/down
    skipped = 2 * 3 * d * t.intermediate_size * guide_tokens if fast_paths else 0  # per chunk

    def attn(q, k):  # q queries after k - q cached keys, causal among themselves
        return 4 * d * (q * (k - q) + q * (q + 1) // 2)

    llm = 0
    cache = [prompt.video_start] * L
    llm += L * per_token * prompt.video_start + sum(attn(prompt.video_start, prompt.video_start) for _ in range(L))
    for n, kept in zip(rec.fed, rec.kept):
        q = n + guide_tokens
        llm += L * per_token * q + sum(attn(q, cache[layer] + q) for layer in range(L)) - skipped
        cache = [c + k for c, k in zip(cache, kept)]
    suffix = prompt.suffix_len
    llm += L * per_token * suffix + sum(attn(suffix, cache[layer] + suffix) for layer in range(L))
    llm += 2 * d * t.vocab_size  # the first token's logits
    # vision: per grid step, P patches through `depth` blocks (window attention except the
    # full-attention blocks), then the 2x2 merger
    steps, gh, gw = video.grid_thw
    P = gh * gw
    D, F = v.hidden_size, v.intermediate_size
    window = (v.window_size // v.patch_size) ** 2
    full = len(v.fullatt_block_indexes)
    block = 2 * P * (3 * D * D + D * D + 3 * D * F)
    vis_attn = 4 * D * P * (full * P + (v.depth - full) * min(P, window))
    merger = 2 * (P // 4) * (4 * D * 4 * D + 4 * D * v.out_hidden_size)
    patch = 2 * P * (3 * v.temporal_patch_size * v.patch_size ** 2) * D
    vision = steps * (v.depth * block + vis_attn + merger + patch)
    return {"llm": llm, "vision": vision, "total": llm + vision}
