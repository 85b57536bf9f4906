"""Video input: decode, sample frames uniformly, resize.

Sampling rule (the papers'; docs/architecture.md): ``T = round_to_even(duration * fps)`` clamped to
``[2, max_frames]``, frame indices ``linspace(0, total - 1, T)`` over the decoded timeline;
frames resized so that the long side is at most ``max_long_side`` (aspect ratio kept),
each side then rounded to a multiple of ``size_factor`` (28 = Qwen patch 14 x merge 2).

Every failure to read a file (missing, empty, truncated, undecodable) raises
:class:`VideoDecodeError`, which names the file and the cause, so that a harness can record
the sample as failed and go on.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

BACKENDS = ("decord", "pyav")


class VideoDecodeError(RuntimeError):
    """A video file could not be turned into frames. ``path`` and ``cause`` say which and why."""

    def __init__(self, path: str, cause: str):
        self.path = str(path)
        self.cause = cause
        super().__init__(f"cannot read video {self.path!r}: {cause}")


class TruncatedVideoError(VideoDecodeError):
    """The stream ended (or broke) before a sampled frame: the container declared more frames
    than decode. ``decoded``: frames decoded before that; ``counted``: whether that is every
    frame that decodes (a pass that skipped nothing), else a counting pass is needed."""

    def __init__(self, path: str, cause: str, decoded: int, counted: bool):
        self.decoded, self.counted = decoded, counted
        super().__init__(path, cause)


@dataclass
class SampledVideo:
    """Frames sampled from one video file.

    frames: uint8 ``[T, 3, H, W]`` (T even, H and W multiples of the size factor).
    timestamps: seconds of each sampled frame on the decoded timeline, ``[T]``.
    """

    path: str
    frames: torch.Tensor
    frame_indices: list[int]
    timestamps: list[float]
    video_fps: float
    total_frames: int  # the frames sampled over: those that decode, where fewer than declared
    sampling_fps: float
    backend: str
    original_size: tuple[int, int] = field(default=(0, 0))  # (height, width) before resizing
    declared_frames: int | None = None  # what the container's header declares (None: the same as total_frames)
    warnings: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


FRAME_RULES = ("fps", "count")


def num_sample_frames(total_frames: int, video_fps: float, fps: float, max_frames: int, rule: str = "fps") -> int:
    """How many frames to sample. ``rule="fps"`` (the authors'): ``duration * fps`` rounded to an
    even number in [2, max_frames]. ``rule="count"`` (lmms-eval's Qwen chat wrappers, their
    ``max_num_frames``): ``max_frames`` whatever the duration, fewer only for a video with fewer
    frames, floored to even.

    A video shorter than two frames still yields 2 (the single frame is repeated): Qwen's
    temporal patch needs pairs.
    """
    if max_frames < 2:
        raise ValueError(f"max_frames must be >= 2, got {max_frames}")
    if rule not in FRAME_RULES:
        raise ValueError(f"unknown frame rule {rule!r}; valid choices: {', '.join(FRAME_RULES)}")
    if rule == "count":
        return max(2, 2 * (min(max_frames, total_frames) // 2))
    duration = total_frames / video_fps
    n = 2 * round(duration * fps / 2)
    n = min(n, max_frames - max_frames % 2, total_frames - total_frames % 2)
    return max(2, n)


def sample_indices(total_frames: int, num_frames: int) -> list[int]:
    """``num_frames`` indices spaced uniformly over ``[0, total_frames - 1]`` (linspace, rounded)."""
    return torch.linspace(0, total_frames - 1, num_frames).round().long().tolist()


def target_size(height: int, width: int, max_long_side: int = 448, factor: int = 28) -> tuple[int, int]:
    """Scale so the long side is <= max_long_side (never up), then round each side to ``factor``."""
    scale = min(1.0, max_long_side / max(height, width))

    def snap(x: float) -> int:
        return max(factor, int(round(x * scale / factor)) * factor)

    h, w = snap(height), snap(width)
    # rounding up may push the long side past the limit: step down once
    while max(h, w) > max(max_long_side, factor):
        if h >= w:
            h -= factor
        else:
            w -= factor
    return h, w


# qwen-vl-utils' per-frame bounds of a video, in tokens of factor x factor pixels, and its sequence
# length (MODEL_SEQ_LEN): what lmms-eval's Qwen wrappers size frames by (sampling.min_pixels / max_pixels)
VIDEO_MIN_TOKENS, VIDEO_MAX_TOKENS, MODEL_SEQ_LEN = 128, 768, 128000


def area_size(height: int, width: int, factor: int, num_frames: int, min_pixels: int | None,
              max_pixels: int | None) -> tuple[int, int]:
    """The frame size qwen-vl-utils' ``fetch_video`` gives a video of ``num_frames`` frames:
    sides multiples of ``factor``, area in ``[min_pixels, max_pixels]`` with ``max_pixels``
    capped per frame (``max(min(768 f^2, 0.9 * 128000 f^2 / n * 2), 1.05 min_pixels)``), sides
    rounded (half to even), then floored to fit the cap or ceiled up to the floor; the aspect
    ratio as close as that allows. Upscales small videos (``min_pixels``)."""
    f = factor
    min_px = VIDEO_MIN_TOKENS * f * f if min_pixels is None else min_pixels
    cap = max(min(VIDEO_MAX_TOKENS * f * f, MODEL_SEQ_LEN * f * f * 0.9 / num_frames * 2), int(min_px * 1.05))
    max_px = cap if max_pixels is None else min(max_pixels, cap)
    if max_px < min_px:
        raise ValueError(f"sampling.max_pixels={max_pixels} is below sampling.min_pixels={min_px}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"aspect ratio {max(height, width) / min(height, width):.1f} is over 200 (a {height}x{width} video)")
    h = max(f, round(height / f) * f)
    w = max(f, round(width / f) * f)
    if h * w > max_px:
        beta = math.sqrt(height * width / max_px)
        h, w = math.floor(height / beta / f) * f, math.floor(width / beta / f) * f
        if h < f or w < f:
            raise ValueError(f"sampling.max_pixels={max_px} leaves a side of a {height}x{width} video under {f} pixels")
    elif h * w < min_px:
        beta = math.sqrt(min_px / (height * width))
        h, w = math.ceil(height * beta / f) * f, math.ceil(width * beta / f) * f
    return h, w


def processor_size(height: int, width: int, factor: int, min_pixels: int) -> tuple[int, int] | None:
    """transformers' Qwen2-VL video processor's second resize, on frames already sized by
    :func:`area_size` (sides multiples of ``factor``, area at most its ``max_pixels``): the size
    it changes them to, or None when it leaves them (only a frame under ``min_pixels`` moves: up)."""
    if height * width >= min_pixels:
        return None
    beta = math.sqrt(min_pixels / (height * width))
    return math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor


def resize_unclamped(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic, antialiased resize of float ``[T, 3, H, W]`` frames in fp32, values neither rounded
    nor clamped (torchvision v2 ``resize`` on a float tensor: the video processor's second resize)."""
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    return torch.nn.functional.interpolate(frames.float(), size=size, mode="bicubic", align_corners=False,
                                           antialias=True)


RESIZE_KERNELS = ("uint8", "float32")


def resize_frames(frames: torch.Tensor, size: tuple[int, int], batch: int = 64, kernel: str = "uint8") -> torch.Tensor:
    """Bicubic, antialiased resize of uint8 ``[T, 3, H, W]`` frames to ``size`` (uint8).

    ``kernel="uint8"``: torch's native uint8 kernel (fixed-point, vectorised), what
    torchvision's v2 ``resize`` runs on a CPU uint8 tensor, and so what transformers' fast
    image/video processors do; pixels may differ from the float path by a few levels where
    the bicubic overshoots. ``kernel="float32"``: the frames in fp32, rounded and clamped back,
    what torchvision's v1 ``functional.resize`` (and so qwen-vl-utils) does; slower (docs/performance.md)."""
    if kernel not in RESIZE_KERNELS:
        raise ValueError(f"unknown resize kernel {kernel!r}; valid choices: {', '.join(RESIZE_KERNELS)}")
    if tuple(frames.shape[-2:]) == tuple(size):
        return frames
    out = torch.empty((frames.shape[0], 3, *size), dtype=torch.uint8)
    for i in range(0, frames.shape[0], batch):
        x = frames[i : i + batch]
        if kernel == "uint8":
            out[i : i + batch] = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
        else:
            y = F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False, antialias=True)
            out[i : i + batch] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


def check_video_file(path: str | os.PathLike) -> None:
    """Raise :class:`VideoDecodeError` for a path that cannot be a video file (a URL, missing, a
    broken symlink or a symlink loop, a directory, empty, unreadable), before anything is
    decoded or loaded."""
    _check_file(os.fspath(path))


def probe_video(path: str | os.PathLike, backend: str = "pyav") -> None:
    """:func:`check_video_file`, then open the container and find a video stream (no frame is
    decoded): a file that is no video fails here, in milliseconds, before a model loads."""
    path = os.fspath(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; valid choices: {', '.join(BACKENDS)}")
    _check_file(path)
    if backend == "decord":
        _read_decord_header(path)
        return
    container, _ = _open_pyav(path, 0)
    container.close()


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _check_file(path: str) -> None:
    if _URL.match(path):
        raise VideoDecodeError(path, "a URL: URLs are not read; download the file first and give its path")
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise VideoDecodeError(path, "a symlink loop (the links point at each other)") from None
        if e.errno == errno.ENOENT and os.path.islink(path):
            raise VideoDecodeError(path, f"a broken symlink (to {os.readlink(path)!r}, which does not exist)") from None
        if e.errno == errno.ENOENT:
            raise VideoDecodeError(path, "file not found") from None
        raise VideoDecodeError(path, f"cannot open it ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise VideoDecodeError(path, "is a directory, not a video file")
    if st.st_size == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise VideoDecodeError(path, f"unreadable ({e.strerror})") from None


def _read_decord_header(path: str, num_threads: int = 0):
    """decord's reader of ``path``, its frame count and frame rate."""
    try:
        import decord
    except ImportError as e:  # pragma: no cover - depends on the platform
        raise VideoDecodeError(path, f"decord is not installed ({e}); use backend='pyav'") from e
    try:
        vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
        return vr, len(vr), float(vr.get_avg_fps())
    except Exception as e:  # decord raises its own DECORDError
        raise VideoDecodeError(path, f"undecodable ({type(e).__name__}: {e})") from e


def _read_decord(path: str, fps: float, max_frames: int, num_threads: int, frame_rule: str = "fps"):
    vr, total, video_fps = _read_decord_header(path, num_threads)
    if total < 1 or not video_fps > 0:
        raise VideoDecodeError(path, f"no decodable frames (frames={total}, fps={video_fps})")
    n = num_sample_frames(total, video_fps, fps, max_frames, frame_rule)
    idx = sample_indices(total, n)
    try:
        frames = vr.get_batch(idx).asnumpy()
    except Exception as e:
        raise VideoDecodeError(path, f"truncated or corrupt stream ({type(e).__name__}: {e})") from e
    if frames.shape[0] != len(idx):
        raise VideoDecodeError(path, f"truncated: got {frames.shape[0]} of {len(idx)} frames")
    return frames, idx, total, video_fps


def _h264_length_size(stream) -> int | None:
    """The NAL length-field size of an H.264 stream stored length-prefixed (mp4, mov, mkv:
    ``avcC`` extradata), else None (another codec, or Annex-B start codes)."""
    ctx = stream.codec_context
    if ctx.name != "h264":
        return None
    extra = bytes(ctx.extradata or b"")
    if len(extra) < 7 or extra[0] != 1:
        return None
    return (extra[4] & 3) + 1


def h264_is_non_reference(data, length_size: int) -> bool:
    """True iff ``data`` (one length-prefixed H.264 access unit) holds slices and every slice
    NAL unit has ``nal_ref_idc == 0``: a picture no other picture predicts from (H.264 §7.4.1),
    so leaving it undecoded changes no other frame. Anything unparsable answers False."""
    heads = _nal_headers(data, length_size)
    return heads is not None and _picture_kind(heads)[1]


def _open_pyav(path: str, num_threads: int):
    import av

    try:
        container = av.open(path)
    except Exception as e:
        raise VideoDecodeError(path, f"undecodable ({type(e).__name__}: {e})") from e
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, "no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    if num_threads:
        stream.thread_count = num_threads
    return container, stream


def _nal_headers(data, length_size: int):
    """The first byte of every NAL unit of a length-prefixed access unit; None if malformed."""
    view = memoryview(data)
    i, n, out = 0, len(view), []
    while i + length_size <= n:
        size = int.from_bytes(view[i : i + length_size], "big")
        i += length_size
        if size < 1 or i + size > n:
            return None
        out.append(view[i])
        i += size
    return out if i == n else None


def _picture_kind(heads: list[int]) -> tuple[bool, bool]:
    """``(IDR, non-reference)`` of an access unit from its NAL header bytes: non-reference
    when it has slices (types 1 / 5) and all have ``nal_ref_idc`` 0; one with data partitions
    (types 2-4) or parameter sets (7 / 8) counts as referenced (it is decoded)."""
    slices = [h for h in heads if h & 0x1F in (1, 5)]
    # data partitions, or in-band parameter sets (SPS / PPS) that later pictures need
    kept = any(h & 0x1F in (2, 3, 4, 7, 8) for h in heads)
    non_ref = bool(slices) and not kept and all(h >> 5 & 3 == 0 for h in slices)
    return any(h & 0x1F == 5 for h in slices), non_ref


def _packet_plan(path: str, length_size: int):
    """One demux pass (no decoding): for every video packet in decode order, ``(pts, is_idr,
    non_reference)``. None when some packet has no pts or two share one (then frames cannot
    be told apart by pts and everything is decoded)."""
    import av

    plan = []
    try:
        with av.open(path) as container:
            for packet in container.demux(container.streams.video[0]):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    return None
                heads = _nal_headers(packet, length_size)
                plan.append((int(packet.pts), *(_picture_kind(heads) if heads is not None else (False, False))))
    except Exception:  # noqa: BLE001 - the decoding pass reports the error
        return None
    if len({p for p, _, _ in plan}) != len(plan):
        return None
    return plan


def packets_to_skip(plan, wanted_pts: set) -> list[bool]:
    """Which packets (decode order) no sampled frame needs: an unsampled non-reference picture,
    or any unsampled picture after the last sampled one before the next IDR picture (an IDR
    starts afresh: nothing after it refers to anything before it, H.264 §3.69)."""
    skip = [False] * len(plan)
    later_wanted = False  # a sampled picture follows in this IDR segment
    for j in range(len(plan) - 1, -1, -1):
        pts, idr, non_ref = plan[j]
        wanted = pts in wanted_pts
        skip[j] = not wanted and (non_ref or not later_wanted)
        later_wanted = (later_wanted or wanted) and not idr
    return skip


class _PlanMismatch(Exception):
    """The file did not demux as its packet plan said (after a seek): decode sequentially."""


def decode_blocks(plan, skip: list[bool], workers: int) -> list[tuple[int, int]]:
    """Split the packets to decode into at most ``workers`` blocks ``(first, last)`` (decode
    order indices, inclusive) of about equal decoding work, each starting at the first packet
    of the stream or at an IDR picture, so that a fresh decoder started there decodes exactly
    what a sequential one does (nothing after an IDR refers to anything before it)."""
    starts = [j for j, (_, idr, _) in enumerate(plan) if idr and j > 0]
    bounds = list(zip([0] + starts, starts + [len(plan)]))
    segs = []  # (first packet, last needed packet, packets decoded) of segments with work
    for a, b in bounds:
        need = [j for j in range(a, b) if not skip[j]]
        if need:
            segs.append((a, need[-1], len(need)))
    if not segs:
        return []
    total = sum(c for _, _, c in segs)
    blocks, acc, first = [], 0, segs[0][0]
    for k, (a, e, c) in enumerate(segs):
        acc += c
        left = len(segs) - k - 1
        if k == len(segs) - 1 or (len(blocks) < workers - 1 and acc >= total * (len(blocks) + 1) / workers
                                  and left > 0):
            blocks.append((first, e))
            if left:
                first = segs[k + 1][0]
    return blocks


def _decode_block(path: str, plan, skip: list[bool], decode_index: dict, first: int, last: int, keep) -> int:
    """Decode packets ``first..last`` of the plan (those not skipped) with a fresh single-
    threaded decoder, seeking to ``first`` (an IDR) unless it is the stream's first packet;
    ``decode_index``: pts -> the packet's index in the plan; ``keep(frame)`` gets every decoded
    frame; returns how many. Raises :class:`_PlanMismatch` if the demuxer does not give the
    plan's packets."""
    import av

    container = av.open(path)
    with container:
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "SLICE", 1
        if first:
            container.seek(plan[first][0], stream=stream, backward=True, any_frame=False)
        j, decoded = first, 0
        for packet in container.demux(stream):
            if not packet.size:
                continue
            if j == first and first:  # after the seek: packets before the IDR are not decoded
                k = decode_index.get(packet.pts)
                if k is None or k > first:
                    raise _PlanMismatch
                if k < first:
                    continue
            if packet.pts != plan[j][0]:
                raise _PlanMismatch
            if not skip[j]:
                for frame in packet.decode():
                    decoded += 1
                    keep(frame)
            j += 1
            if j > last:
                break
        if j <= last:
            raise _PlanMismatch  # the stream ended early: let the sequential path say how
        for frame in stream.decode(None):  # the frames still in the decoder's reorder buffer
            decoded += 1
            keep(frame)
    return decoded


def _decode_parallel(path: str, plan, skip: list[bool], keep, workers: int) -> int:
    """:func:`_decode_block` over :func:`decode_blocks`, one thread each (PyAV releases the
    GIL while decoding). Returns the frames decoded; raises the first worker's error."""
    blocks = decode_blocks(plan, skip, workers)
    decode_index = {pts: j for j, (pts, _, _) in enumerate(plan)}  # built once, read by every block
    if len(blocks) <= 1:
        return sum(_decode_block(path, plan, skip, decode_index, a, e, keep) for a, e in blocks)
    counts, errors = [0] * len(blocks), []

    def run(k, a, e):
        try:
            counts[k] = _decode_block(path, plan, skip, decode_index, a, e, keep)
        except BaseException as ex:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(ex)

    threads = [threading.Thread(target=run, args=(k, a, e), daemon=True) for k, (a, e) in enumerate(blocks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise next((x for x in errors if isinstance(x, _PlanMismatch)), errors[0])
    return sum(counts)


def _decode_selected(container, stream, path: str, idx: list[int], total: int, skip_unused: bool,
                     workers: int = 1):
    """The frames at display indices ``idx`` (rgb24 arrays, in ``idx`` order).

    With ``skip_unused`` (H.264 in mp4/mkv), packets no sampled frame needs are not decoded
    at all (:func:`packets_to_skip`): unsampled non-reference pictures (with B-frames about
    half of a video's), and the unsampled pictures between the last sampled one of an IDR
    segment and the next IDR. Frames are matched to indices by their pts. With ``workers`` > 1
    the packets are decoded in that many blocks of whole IDR segments, in parallel, each by a
    fresh single-threaded decoder (the same bytes: :func:`decode_blocks`); if the file does not
    demux as planned after a seek, one sequential pass does it. Without the plan (another
    codec, or pts that do not number the frames), every frame is decoded and counted."""
    wanted: dict[int, list[int]] = {}
    for pos, i in enumerate(idx):
        wanted.setdefault(i, []).append(pos)
    out: list[np.ndarray | None] = [None] * len(idx)
    length_size = _h264_length_size(stream) if skip_unused else None
    plan = _packet_plan(path, length_size) if length_size is not None else None
    if plan is not None and len(plan) != total:
        plan = None
    decoded = 0
    lock = threading.Lock()
    try:
        if plan is not None:
            order = sorted(p for p, _, _ in plan)  # display order
            index_of = {p: i for i, p in enumerate(order)}
            skip = packets_to_skip(plan, {order[i] for i in wanted})

            def keep(frame) -> bool:
                """Store a sampled frame; True if it was one not yet stored."""
                i = index_of.get(frame.pts)
                if i not in wanted or out[wanted[i][0]] is not None:
                    return False
                arr = frame.to_ndarray(format="rgb24")
                with lock:
                    for pos in wanted[i]:
                        out[pos] = arr
                return True

            done = False
            if workers > 1:
                try:
                    decoded = _decode_parallel(path, plan, skip, keep, workers)
                    done = True
                except Exception:  # noqa: BLE001 - a mismatch or a decoding error: the sequential pass decides
                    out[:] = [None] * len(idx)
                    decoded = 0
            if not done:
                left = len(wanted)
                j = 0
                for packet in container.demux(stream):
                    if packet.size:
                        j += 1  # the same demuxer gives the plan's packets in the plan's order
                        if j <= len(plan) and skip[j - 1] and packet.pts == plan[j - 1][0]:
                            continue
                    for frame in packet.decode():
                        decoded += 1
                        left -= keep(frame)
                    if left == 0:
                        break
        else:
            last = max(idx)
            for i, frame in enumerate(container.decode(stream)):
                decoded = i + 1
                if i in wanted:
                    arr = frame.to_ndarray(format="rgb24")
                    for pos in wanted[i]:
                        out[pos] = arr
                if i >= last:
                    break
    except Exception as e:
        raise TruncatedVideoError(path, f"truncated or corrupt stream after {decoded} frames ({type(e).__name__}: {e})",
                                  decoded, counted=plan is None) from e
    if any(a is None for a in out):
        raise TruncatedVideoError(path, f"truncated: stream ends after {decoded} of {total} frames", decoded,
                                  counted=plan is None)
    return out


def count_decodable_frames(path: str, num_threads: int) -> int:
    """Frames that decode from the start of the stream until its end or its first error."""
    container, stream = _open_pyav(path, num_threads)
    n = 0
    with container:
        try:
            for _ in container.decode(stream):
                n += 1
        except Exception:  # noqa: BLE001 - the frames before the damage are what there is
            pass
    return n


def decode_workers(num_threads: int) -> int:
    """Parallel PyAV decoders for ``num_threads`` (0: the cores this process may use, at most 8)."""
    if num_threads > 0:
        return num_threads
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _read_pyav(path: str, fps: float, max_frames: int, num_threads: int, skip_unused: bool = True,
               workers: int | None = None, strict_frames: bool = False, frame_rule: str = "fps"):
    """``workers``: parallel decoders over IDR segments (None: :func:`decode_workers`).
    Returns ``(frames, indices, frames sampled over, fps, frames the header declares)``; see
    :func:`load_video` for ``strict_frames``."""
    container, stream = _open_pyav(path, num_threads)
    with container:
        rate = stream.average_rate or stream.guessed_rate
        video_fps = float(rate) if rate else 0.0
        total = int(stream.frames or 0)
        if total <= 0 and stream.duration and stream.time_base and video_fps > 0:
            total = int(round(float(stream.duration * stream.time_base) * video_fps))
        if total <= 0 or not video_fps > 0:
            raise VideoDecodeError(path, f"no frame count or rate in the header (frames={total}, fps={video_fps})")
        n = num_sample_frames(total, video_fps, fps, max_frames, frame_rule)
        idx = sample_indices(total, n)
        workers = decode_workers(num_threads) if workers is None else workers
        try:
            out = _decode_selected(container, stream, path, idx, total, skip_unused, workers)
            return np.stack(out), idx, total, video_fps, total
        except TruncatedVideoError as e:
            if strict_frames:
                raise
            short = e
    # fewer frames decode than the header declares (a cut-off file): sample over those that do
    decodable = short.decoded if short.counted else count_decodable_frames(path, num_threads)
    if decodable < 1:
        raise short
    n = num_sample_frames(decodable, video_fps, fps, max_frames, frame_rule)
    idx = sample_indices(decodable, n)
    container, stream = _open_pyav(path, num_threads)
    with container:
        out = _decode_selected(container, stream, path, idx, decodable, skip_unused=False)
    return np.stack(out), idx, decodable, video_fps, total


def load_video(
    path: str | os.PathLike,
    fps: float = 2.0,
    max_frames: int = 2048,
    max_long_side: int = 448,
    size_factor: int = 28,
    backend: str = "pyav",
    num_threads: int = 0,
    resize: str = "uint8",
    strict_frames: bool = False,
    frame_rule: str = "fps",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    processor_resize: bool = False,
) -> SampledVideo:
    """Decode ``path``, sample frames by the rule above and resize them.

    Size: the long side capped at ``max_long_side`` (never upscaled), sides multiples of
    ``size_factor``; or, with ``min_pixels`` / ``max_pixels`` given, by pixel area as qwen-vl-utils
    sizes a video (:func:`area_size`, ``max_long_side`` unused), and with ``processor_resize``
    a frame left under ``min_pixels`` is resized once more as transformers' Qwen2-VL video
    processor does (:func:`processor_size`; the frames are then float, unclamped).

    A file whose header declares more frames than its stream decodes (a cut-off file, common
    in the wild) is sampled uniformly over the frames that decode, and the result says so
    (``declared_frames``, ``warnings``); ``strict_frames=True`` raises
    :class:`TruncatedVideoError` instead. (PyAV; decord counts the frames that decode itself.)

    Raises VideoDecodeError for any unreadable file, ValueError for bad arguments.
    """
    path = os.fspath(path)
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; valid choices: {', '.join(BACKENDS)}")
    if resize not in RESIZE_KERNELS:
        raise ValueError(f"unknown resize kernel {resize!r}; valid choices: {', '.join(RESIZE_KERNELS)}")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    _check_file(path)
    if backend == "decord":
        frames_np, idx, total, video_fps = _read_decord(path, fps, max_frames, num_threads, frame_rule)
        declared = total
    else:
        frames_np, idx, total, video_fps, declared = _read_pyav(path, fps, max_frames, num_threads,
                                                                strict_frames=strict_frames, frame_rule=frame_rule)
    warnings = []
    if declared != total:
        warnings.append(f"{path}: the header declares {declared} frames but only {total} decode (a cut-off file?); "
                        f"sampled over the {total} that decode (sampling.strict_frames=true refuses such files)")
    frames = torch.from_numpy(frames_np).permute(0, 3, 1, 2)  # [T, 3, H, W]
    h, w = frames.shape[-2:]
    if min_pixels is None and max_pixels is None:
        size = target_size(h, w, max_long_side, size_factor)
    else:
        size = area_size(int(h), int(w), size_factor, len(idx), min_pixels, max_pixels)
    frames = resize_frames(frames, size, kernel=resize).contiguous()
    if processor_resize and min_pixels is not None:
        again = processor_size(*size, size_factor, min_pixels)
        if again is not None:
            frames = resize_unclamped(frames, again).contiguous()
    return SampledVideo(
        path=path,
        frames=frames,
        frame_indices=idx,
        timestamps=[i / video_fps for i in idx],
        video_fps=video_fps,
        total_frames=total,
        # as qwen-vl-utils defines it: sampled frames per second of video
        sampling_fps=len(idx) / total * video_fps,
        backend=backend,
        original_size=(int(h), int(w)),
        declared_frames=declared,
        warnings=warnings,
    )


def write_test_video(
    path: str | os.PathLike,
    num_frames: int = 16,
    size: tuple[int, int] = (64, 96),
    fps: int = 8,
    seed: int = 0,
    codec: str = "mpeg4",
) -> str:
    """Write a small video with PyAV (no system ffmpeg needed): a moving square on a
    slowly changing background. Used by tests and the demo."""
    import av

    path = os.fspath(path)
    h, w = size
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=3)
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        for t in range(num_frames):
            img = np.empty((h, w, 3), dtype=np.uint8)
            img[:] = (base + 3 * t) % 255
            side = max(4, min(h, w) // 4)
            y = (t * 3) % max(1, h - side)
            x = (t * 5) % max(1, w - side)
            img[y : y + side, x : x + side] = (255 - img[0, 0]).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path

