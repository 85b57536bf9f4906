"""From a video file and a question to an answer: sampling -> adapter -> engine.

This is the one path used by ``retake ask``, the benchmark and (later) the harness.
"""

from __future__ import annotations

import resource
from dataclasses import asdict, dataclass

from .engine import Engine, EngineConfig
from .methods import Method
from .methods.uniform import max_frames_for_context
from .models import VideoLMAdapter
from .video import load_video


@dataclass
class SamplingConfig:
    fps: float = 2.0
    max_frames: int = 2048
    max_long_side: int = 448
    backend: str = "decord"


def answer_question(
    adapter: VideoLMAdapter,
    video_path: str,
    question: str,
    method: Method,
    sampling: SamplingConfig | None = None,
    engine: EngineConfig | None = None,
    system_prompt: str | None = None,
) -> dict:
    """Answer one question about one video; returns a JSON-ready dict (see ``retake ask --json``)."""
    sampling = sampling or SamplingConfig()
    engine = engine or EngineConfig()

    def sample(max_frames: int):
        video = load_video(
            video_path, fps=sampling.fps, max_frames=max_frames, max_long_side=sampling.max_long_side,
            size_factor=adapter.size_factor, backend=sampling.backend,
        )
        inputs = adapter.prepare_video(video.frames, video.sampling_fps, video.timestamps)
        return video, inputs, adapter.build_prompt(question, inputs, system_prompt=system_prompt)

    video, inputs, prompt = sample(sampling.max_frames)
    if getattr(method, "fits_frames_to_context", False):
        # a step's cost includes the text some families interleave per step (Qwen3-VL's timestamps)
        fit = max_frames_for_context(engine.max_context, prompt.num_text_tokens, inputs.max_step_tokens, inputs.frames_per_step)
        if fit < video.num_frames:  # sample again, fewer frames over the same timeline
            video, inputs, prompt = sample(fit)
    out = Engine(adapter, engine).run(inputs, prompt, method)
    peak = out.peak_memory_bytes
    return {
        "answer": adapter.decode(out.tokens),
        "method": method.name,
        "frames": video.num_frames,
        "frame_size": list(video.frames.shape[-2:]),
        "sampling_fps": video.sampling_fps,
        "video_fps": video.video_fps,
        "video_tokens": out.video_tokens,
        "text_tokens": out.text_tokens,
        "keep_ratio": out.keep_ratio,
        "kept_video_tokens_per_layer": out.kept_video_tokens_per_layer,
        "kv_tokens_per_layer": out.kv_tokens_per_layer,
        "kv_cache_bytes": out.kv_cache_bytes,
        "generated_tokens": len(out.tokens),
        "vision_seconds": out.vision_seconds,
        "prefill_seconds": out.prefill_seconds,
        "decode_seconds": out.decode_seconds,
        # accelerator peak during the run; on CPU the process's peak resident memory
        "peak_memory_bytes": peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_memory_kind": "accelerator" if peak is not None else "process_rss",
        "sampling": asdict(sampling),
        "engine": asdict(engine),
    }
