"""From a video file and a question to an answer: sampling -> adapter -> engine.

This is the one path used by ``retake ask``, the benchmark and the harness.

Two things make an evaluation run faster without changing any answer:

- :class:`VideoReuse`: questions on the same video (VideoMME has 3 per video, LVBench about
  15) reuse its decoded, preprocessed inputs and its vision-encoder features. Entries are
  keyed by :func:`video_key`: the model object and its dtype/device, the file (resolved path,
  size, modification time) and every sampling setting that changes the frames (fps, frame
  count, resolution, size factor, backend), so a change of model, sampling or resolution never
  meets a stale entry. It holds at most ``max_videos`` videos (least recently used goes).
- :class:`Prefetcher`: decodes and preprocesses the next videos in a background thread while
  the model works on the current one, at most ``depth`` videos ahead (bounded memory).
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

from .config import EngineConfig, SamplingConfig
from .engine import Engine
from .methods.base import InputFit, Method
from .models import VideoInputs, VideoLMAdapter
from .video import load_video


@dataclass
class PreparedVideo:
    """A video sampled and made ready for one model: what a question needs of it.

    ``inputs`` keeps the pixels until the features are computed; a cached entry drops them
    then (``features`` is all the engine reads afterwards)."""

    key: tuple
    inputs: VideoInputs
    num_frames: int
    frame_size: list[int]
    sampling_fps: float
    video_fps: float
    decode_seconds: float  # decode + sampling + resize + the adapter's preprocessing
    features: Any = None  # the engine's encode() output, once computed
    original_size: tuple[int, int] | None = None  # (height, width) before resizing
    declared_frames: int | None = None  # the container header's frame count
    decoded_frames: int | None = None  # the frames sampled over (fewer than declared in a cut-off file)
    warnings: tuple[str, ...] = ()


def video_key(adapter: VideoLMAdapter, path: str, sampling: SamplingConfig, max_frames: int) -> tuple:
    """What identifies a prepared video: model, file, and every setting that changes its frames."""
    path = os.path.realpath(os.fspath(path))
    try:
        st = os.stat(path)
        stamp = (st.st_size, st.st_mtime_ns)
    except OSError:
        stamp = None  # load_video raises the clear error
    model = adapter.model
    param = next(model.parameters(), None)
    return (id(model), type(adapter).__name__, str(getattr(param, "dtype", None)), str(getattr(param, "device", None)),
            path, stamp, float(sampling.fps), int(max_frames), int(sampling.max_long_side), int(adapter.size_factor),
            str(sampling.backend), str(sampling.resize), bool(sampling.strict_frames), str(sampling.frame_rule),
            sampling.min_pixels, sampling.max_pixels, bool(adapter.processor_resize))


def prepare_video(adapter: VideoLMAdapter, path: str, sampling: SamplingConfig, max_frames: int | None = None,
                  decode_threads: int = 0) -> PreparedVideo:
    """Decode, sample, resize and preprocess ``path`` for ``adapter`` (no model compute).
    ``decode_threads``: the decoder's threads (``load_video``'s ``num_threads``; 0: every core)."""
    max_frames = sampling.max_frames if max_frames is None else max_frames
    key = video_key(adapter, path, sampling, max_frames)
    t = time.perf_counter()
    video = load_video(path, fps=sampling.fps, max_frames=max_frames, max_long_side=sampling.max_long_side,
                       size_factor=adapter.size_factor, backend=sampling.backend,
                       resize=sampling.resize, num_threads=decode_threads, strict_frames=sampling.strict_frames,
                       frame_rule=sampling.frame_rule, min_pixels=sampling.min_pixels, max_pixels=sampling.max_pixels,
                       processor_resize=adapter.processor_resize)
    inputs = adapter.prepare_video(video.frames, video.sampling_fps, video.timestamps)
    return PreparedVideo(key=key, inputs=inputs, num_frames=video.num_frames, frame_size=list(video.frames.shape[-2:]),
                         sampling_fps=video.sampling_fps, video_fps=video.video_fps,
                         decode_seconds=time.perf_counter() - t, original_size=tuple(video.original_size),
                         declared_frames=video.declared_frames,
                         decoded_frames=video.total_frames, warnings=tuple(video.warnings))


class VideoReuse:
    """Prepared videos and their vision features, reused across questions (see module doc).

    The entry of a video keeps its features on the model's device (one video's worth, which
    prefill holds anyway); ``max_videos`` bounds how many videos are kept."""

    def __init__(self, max_videos: int = 1):
        if max_videos < 1:
            raise ValueError(f"max_videos must be >= 1, got {max_videos}")
        self.max_videos = max_videos
        self._entries: OrderedDict[tuple, PreparedVideo] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple) -> PreparedVideo | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def __contains__(self, key: tuple) -> bool:
        return key in self._entries

    def put(self, entry: PreparedVideo) -> None:
        self._entries[entry.key] = entry
        self._entries.move_to_end(entry.key)
        while len(self._entries) > self.max_videos:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class StateReuse:
    """Compressed videos (``Engine.prefill_video`` states) kept for the video's next questions,
    in question mode ``unknown`` (the state does not depend on the question). Keyed by the
    prepared video's key, the method and its parameters, the engine settings that shape the
    state and the system prompt; at most ``max_states`` (a new video's state replaces the
    last one's, which is freed before the new video is prefilled)."""

    def __init__(self, max_states: int = 1):
        if max_states < 1:
            raise ValueError(f"max_states must be >= 1, got {max_states}")
        self.max_states = max_states
        self._states: OrderedDict[tuple, Any] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: tuple):
        state = self._states.get(key)
        if state is None:
            self.misses += 1
            return None
        self._states.move_to_end(key)
        self.hits += 1
        return state

    def make_room(self) -> None:
        """Free the oldest states so that one more fits."""
        while len(self._states) >= self.max_states:
            self._states.popitem(last=False)

    def put(self, key: tuple, state) -> None:
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self.max_states:
            self._states.popitem(last=False)

    def clear(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        return len(self._states)


def state_key(pv: PreparedVideo, method: Method, engine: EngineConfig, system_prompt: str | None) -> tuple:
    """What a compressed video state depends on (decoding length aside)."""
    settings = {k: v for k, v in asdict(engine).items() if k != "max_new_tokens"}
    return (pv.key, type(method).__name__, repr(method), tuple(sorted(settings.items())), system_prompt)


class Prefetcher:
    """Prepares upcoming videos in one background thread, at most ``depth`` ahead.

    ``schedule(paths)`` gives the order videos will be asked for (with ``repeats=False``
    consecutive repeats of a path count once: the caller reuses the first); ``take(path)``
    returns the prepared video (waiting for it if it is still being decoded) and starts the
    next one. A video that fails to decode is raised by ``take``, for that sample only; a path
    not scheduled is prepared on the spot.

    ``decode_threads``: the background decode's threads (0: every core; 1 leaves a CPU model
    more of its cores, at the price of a slower decode: ``docs/performance.md`` §4)."""

    def __init__(self, adapter: VideoLMAdapter, sampling: SamplingConfig, depth: int = 1,
                 decode_threads: int = 0):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.adapter, self.sampling, self.depth = adapter, sampling, depth
        self.decode_threads = decode_threads
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retake-prefetch")
        self._order: list[str] = []
        self._next = 0
        self._pending: list[tuple[str, Future]] = []
        self._lock = threading.Lock()
        self.waited_seconds = 0.0  # time take() spent waiting on an unfinished video

    def schedule(self, paths: list[str], repeats: bool = False) -> None:
        with self._lock:
            self._order = []
            for p in paths:
                if repeats or not self._order or self._order[-1] != p:
                    self._order.append(p)
            self._next = 0
        self._fill()

    def _fill(self) -> None:
        with self._lock:
            while len(self._pending) < self.depth and self._next < len(self._order):
                path = self._order[self._next]
                self._next += 1
                self._pending.append((path, self._pool.submit(prepare_video, self.adapter, path, self.sampling,
                                                                None, self.decode_threads)))

    def take(self, path: str) -> PreparedVideo:
        with self._lock:
            k = next((k for k, (p, _) in enumerate(self._pending) if p == path), None)
            future = self._pending.pop(k)[1] if k is not None else None
        try:
            if future is None:
                return prepare_video(self.adapter, path, self.sampling)
            t = time.perf_counter()
            done = future.done()
            try:
                return future.result()
            finally:
                if not done:
                    self.waited_seconds += time.perf_counter() - t
        finally:
            self._fill()

    def close(self) -> None:
        with self._lock:
            for _, f in self._pending:
                f.cancel()
            self._pending.clear()
        self._pool.shutdown(wait=True)


def answer_question(
    adapter: VideoLMAdapter,
    video_path: str,
    question: str,
    method: Method,
    sampling: SamplingConfig | None = None,
    engine: EngineConfig | None = None,
    system_prompt: str | None = None,
    reuse: VideoReuse | None = None,
    prepared: PreparedVideo | None = None,
    states: StateReuse | None = None,
) -> dict:
    """Answer one question about one video; returns a JSON-ready dict (see ``retake ask --json``).

    ``reuse``: keep / take this video's inputs and features there. ``prepared``: the video
    already prepared (a :class:`Prefetcher`'s), used when its key matches. ``states``: in
    question mode ``unknown``, keep / take the video's compressed cache there (the answer is
    the same as without: ``tests/test_question_unknown.py``)."""
    sampling = sampling or SamplingConfig()
    engine = engine or EngineConfig()
    prefill = Engine(adapter, engine)  # `engine` is its EngineConfig (the public keyword)

    def get(max_frames: int, at: SamplingConfig | None = None) -> tuple[PreparedVideo, bool]:
        at = at or sampling
        key = video_key(adapter, video_path, at, max_frames)
        hit = reuse.get(key) if reuse is not None else None
        if hit is not None:
            return hit, True
        pv = prepared if prepared is not None and prepared.key == key else prepare_video(adapter, video_path, at, max_frames)
        return pv, False

    mode = engine.question_mode
    # the chat template without a question: the proxy guide, and what the budget is made of
    # when the question is unknown (the engine's rule)
    needs_proxy = prefill.needs_proxy(method)

    def prompts(pv: PreparedVideo):
        prompt = adapter.build_prompt(question, pv.inputs, system_prompt=system_prompt)
        proxy = adapter.build_prompt("", pv.inputs, system_prompt=system_prompt) if needs_proxy else None
        return prompt, proxy, prefill.budget_text_tokens(prompt, proxy, mode)

    pv, reused = get(sampling.max_frames)
    full_video_tokens = pv.inputs.num_tokens  # at the requested sampling, before a method refits it
    prompt, proxy, budget_text = prompts(pv)
    inputs = pv.inputs
    refit = method.fit_input(InputFit(
        max_context=engine.max_context, budget_text=budget_text, num_frames=pv.num_frames,
        frame_size=tuple(pv.frame_size), original_size=pv.original_size, max_long_side=sampling.max_long_side,
        num_steps=inputs.num_steps, frames_per_step=inputs.frames_per_step, tokens_per_step=inputs.tokens_per_step,
        max_step_tokens=inputs.max_step_tokens, size_factor=adapter.size_factor,
        tokens_follow_resolution=adapter.tokens_follow_resolution))
    if refit is not None:  # sample again: fewer frames over the same timeline, or smaller ones
        at = replace(sampling, max_long_side=refit.max_long_side) if refit.max_long_side else sampling
        pv, reused = get(refit.max_frames or sampling.max_frames, at)
        prompt, proxy, budget_text = prompts(pv)
    warnings = list(pv.warnings)
    if budget_text < prompt.num_text_tokens:
        over = prompt.num_text_tokens - budget_text
        warnings.append(f"the question takes {over} tokens more than engine.question_tokens="
                        f"{engine.question_tokens} reserved for it: the context is up to {over} tokens over max_context")
    vision_seconds = 0.0
    features = pv.features
    skey = state_key(pv, method, engine, system_prompt) if states is not None and mode == "unknown" else None
    state = states.get(skey) if skey is not None else None
    if state is None and reuse is not None and features is None:
        features, vision_seconds = prefill.encode(pv.inputs)
        # the entry keeps what the engine reads, not the pixels
        reuse.put(replace(pv, inputs=replace(pv.inputs, pixel_values=None), features=features))
    if skey is None:
        out = prefill.run(pv.inputs, prompt, method, features=features, proxy=proxy)
    else:
        if state is None:  # compress the video once, without the question
            states.make_room()
            kind, guide = prefill.guide_for(method, prompt, proxy, mode)
            state = prefill.prefill_video(pv.inputs, proxy, method, features=features, guide=guide,
                                         text_tokens=budget_text, guide_kind=kind)
            states.put(skey, state)
        out = prefill.answer(state, prompt)
    vision_seconds += out.vision_seconds
    peak = out.peak_memory_bytes
    kept = out.kept_video_tokens_per_layer
    return {
        "answer": adapter.decode(out.tokens),
        "method": method.name,
        "frames": pv.num_frames,
        "frame_size": list(pv.frame_size),
        "sampling_fps": pv.sampling_fps,
        "video_fps": pv.video_fps,
        "declared_frames": pv.declared_frames,
        "decoded_frames": pv.decoded_frames,
        "warnings": warnings,
        "video_tokens": out.video_tokens,
        "text_tokens": out.text_tokens,
        "keep_ratio": out.keep_ratio,
        # video tokens at the requested frames (uniform samples fewer) and the share of them the
        # cache holds, mean over layers: the compression actually achieved
        "full_video_tokens": full_video_tokens,
        "achieved_keep_ratio": sum(kept) / len(kept) / full_video_tokens if kept and full_video_tokens else None,
        "kept_video_tokens_per_layer": kept,
        # entries per KV head after prefill (the mean over a layer's heads, where methods keep a set
        # per head) and each layer's fullest head; the bytes held, counted per head
        "kv_tokens_per_layer": out.kv_tokens_per_layer,
        "kv_tokens_per_layer_max_head": out.kv_tokens_per_layer_max_head,
        "kv_cache_bytes": out.kv_cache_bytes,
        # a hybrid model's linear-attention states (Qwen3.5): fixed bytes beside the KV, not compressible
        "recurrent_state_bytes": out.state_bytes,
        "generated_tokens": len(out.tokens),
        "question_mode": mode,
        "guide": out.guide,  # what the chunks were shown: question | proxy | none
        "budget_text_tokens": out.budget_text_tokens,
        # the most video entries a layer held after any chunk, and the cache's largest size
        # during prefill (one chunk and the guide in it): flat in video length under a memory cap
        "video_held_max": max(out.video_held_max_per_layer) if out.video_held_max_per_layer else None,
        "peak_kv_cache_bytes": out.peak_kv_cache_bytes,
        "cache_reused": out.cache_reused,
        "video_reused": reused,
        # decode + preprocessing of this question's video (0 when reused; a prefetched video's
        # was spent in the background)
        "input_seconds": 0.0 if reused else pv.decode_seconds,
        "vision_seconds": vision_seconds,
        "prefill_seconds": out.prefill_seconds + (vision_seconds - out.vision_seconds),
        "decode_seconds": out.decode_seconds,
        # accelerator peak during the run; on CPU the process's peak resident memory
        "peak_memory_bytes": peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_memory_kind": "accelerator" if peak is not None else "process_rss",
        "sampling": asdict(sampling),
        "engine": asdict(engine),
    }
