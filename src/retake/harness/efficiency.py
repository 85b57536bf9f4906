"""A finished cell's cost beside its accuracy, from its predictions lines: ``metrics.json``'s
``efficiency`` (what compression bought: keep ratio, tokens and bytes held, seconds per stage,
peak memory, samples/hour) and ``throughput`` (where the time went) blocks, and the chance
accuracy of its questions (docs/harness.md, "Files of a cell")."""

from __future__ import annotations


def throughput(records: list[dict], timing: dict | None) -> dict:
    """Where the time went: per-sample seconds summed over the samples answered in this run
    (resumed ones carry their first run's figures), videos reused, and the evaluation's wall
    time on rank 0 with the time it waited on a video being decoded."""
    answered = [r for r in records if r.get("prediction") is not None]
    out = {k: round(sum(float(r.get(k) or 0) for r in answered), 3)
           for k in ("input_seconds", "vision_seconds", "prefill_seconds", "decode_seconds")}
    out["videos_reused"] = sum(bool(r.get("video_reused")) for r in answered)
    out["caches_reused"] = sum(bool(r.get("cache_reused")) for r in answered)  # question_mode=unknown
    out.update(timing or {})
    if timing and timing.get("evaluate_seconds"):
        out["samples_per_hour"] = round(3600 * len(records) / timing["evaluate_seconds"], 1)
    return out


def _summary(values: list[float], *kinds: str) -> dict:
    """``{"mean": ..., "total": ..., "max": ...}`` (the kinds asked for) of the values present."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return {k: None for k in kinds}
    out = {"mean": sum(values) / len(values), "total": sum(values), "max": max(values)}
    return {k: out[k] for k in kinds}


def efficiency(records: list[dict], timing: dict | None) -> dict:
    """What compression bought, over the samples answered (resumed ones carry their first run's
    figures): the achieved keep ratio (kept video tokens over the video's tokens at the requested
    frames, mean over layers), tokens and bytes held per layer, seconds per stage (prefill
    includes the vision encoder), accelerator peak memory (the process's peak RSS on CPU), and
    the cell's samples/hour."""
    answered = [r for r in records if r.get("prediction") is not None]
    col = lambda key: [r.get(key) for r in answered]  # noqa: E731
    kinds = {r.get("peak_memory_kind") for r in answered} - {None}
    out = {
        "num_samples": len(answered),
        "frames": _summary(col("frames"), "mean"),  # sampled per video (uniform samples fewer)
        "keep_ratio": _summary(col("keep_ratio"), "mean"),  # the budget's r = (max_context - text) / video tokens
        "achieved_keep_ratio": _summary(col("achieved_keep_ratio"), "mean"),
        "kept_video_tokens_per_layer": _summary(col("kept_video_tokens_mean"), "mean", "total"),
        "video_tokens": _summary(col("full_video_tokens") if any(col("full_video_tokens")) else col("video_tokens"),
                                 "mean", "total"),
        "kv_tokens_per_layer": _summary(col("kv_tokens_mean"), "mean", "max"),  # per KV head, mean over heads
        "kv_tokens_max_head": _summary(col("kv_tokens_max_head"), "mean", "max"),  # the fullest head of any layer
        "kv_bytes_per_layer": _summary(col("kv_bytes_per_layer"), "mean", "max"),
        "kv_cache_bytes": _summary(col("kv_cache_bytes"), "mean", "max"),  # all layers, after prefill
        "recurrent_state_bytes": _summary(col("recurrent_state_bytes"), "mean", "max"),  # hybrid models' fixed states
        # the cache's largest size during prefill (one chunk and the guide in it)
        "peak_kv_cache_bytes": _summary(col("peak_kv_cache_bytes"), "mean", "max"),
        "video_held_max": _summary(col("video_held_max"), "max"),  # video entries a layer held at most
        "vision_seconds": _summary(col("vision_seconds"), "mean", "total"),
        "prefill_seconds": _summary(col("prefill_seconds"), "mean", "total"),
        "decode_seconds": _summary(col("decode_seconds"), "mean", "total"),
        "peak_memory_bytes": _summary(col("peak_memory_bytes"), "mean", "max"),
        "peak_memory_kind": kinds.pop() if len(kinds) == 1 else None,
        "samples_per_hour": None,
    }
    if timing and timing.get("evaluate_seconds"):
        out["samples_per_hour"] = round(3600 * len(records) / timing["evaluate_seconds"], 1)
    return out


def chance_accuracy(samples: list) -> float | None:
    """Accuracy (%) of guessing uniformly among each question's options."""
    return 100.0 * sum(1 / len(s.options) for s in samples) / len(samples) if samples else None
