"""What the bench's suites share: paths, the random bench checkpoint and video, device sync,
the machine description, the long H.264 test video and table helpers."""

from __future__ import annotations

import os
import platform
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "scripts", "bench.py")  # the entry; the memory suite runs each point through it


def tiny_checkpoint(args) -> str:
    from retake.tiny import write_tiny_model

    sizes = dict(layers=args.layers, hidden=args.hidden, heads=args.heads, kv_heads=args.kv_heads,
                 intermediate=args.intermediate)
    ckpt = os.path.join(tempfile.gettempdir(), "retake_bench_" + "_".join(map(str, [args.arch, *sizes.values()])))
    if not os.path.exists(os.path.join(ckpt, "config.json")):
        write_tiny_model(args.arch, ckpt, seed=0, **sizes)
    return ckpt


def random_video(ad, frames: int, size: int):
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (frames, 3, size, size), dtype=torch.uint8, generator=g)
    inputs = ad.prepare_video(pixels, 2.0, [i / 2 for i in range(frames)])
    return pixels, inputs, ad.build_prompt("Describe the video.", inputs)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = f"{names[0]} x {len(names)}" if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    import transformers

    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__, "transformers": transformers.__version__, "threads": torch.get_num_threads()}



def long_video(path: str, seconds: int, width: int = 640, height: int = 360, fps: int = 30) -> str:
    """A moving-pattern H.264 video (x264 defaults of preset 'veryfast': B-frames, b-pyramid),
    one slice per picture as in camera and web video (frame-threaded encoding; sliced-thread
    encoding would cut every picture into one slice per thread, which slice-threaded decoding
    then parallelises unlike real files)."""
    import av

    if os.path.exists(path):
        return path
    tmp = path + ".part.mp4"
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(tmp, mode="w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.thread_type = "FRAME"  # libx264: no sliced threads, so one slice per picture
        s.options = {"preset": "veryfast", "crf": "23"}
        for t in range(seconds * fps):
            img = np.empty((height, width, 3), dtype=np.uint8)
            img[..., 0] = (xx + 3 * t) % 256
            img[..., 1] = (yy + t) % 256
            img[..., 2] = ((xx + yy) // 4 + 2 * t) % 256
            x0, y0 = (7 * t) % (width - 80), (3 * t) % (height - 80)
            img[y0 : y0 + 80, x0 : x0 + 80] = (255, 255, 255) if (t // fps) % 2 else (0, 0, 0)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    os.replace(tmp, path)
    return path



def duration(seconds: int) -> str:
    return f"{seconds // 60}-min" if seconds % 60 == 0 else f"{seconds}-s"

