"""The needle benchmark (``dataset=needle``): long synthetic videos whose questions hang on
short events. Its public name is ``retake.needle`` (the same names and command line).

A video is ``num_frames`` frames at ``fps`` (default 64 frames at 2 fps: 32 s) of a slowly
drifting background that sometimes cuts abruptly to another, with a grey dot moving across
it as a distractor. *Needles* are saturated coloured squares that flash for ``needle_frames``
frames (one Qwen grid step: 2 frames), anywhere in the video. Four question types, four
options each, in a fixed order per type:

- ``colour``: one needle. "What colour was that square?" red / green / blue / yellow.
- ``order``: two needles of different colours. "What colour was the first square?"
- ``count``: 1-4 needles of one colour. "How many times did it flash?" once ... four times.
- ``when``: one needle. "When was the flash?" the video's first / second / third / last
  quarter (never within a needle of a quarter's edge).

Sample ``i`` has type ``QUESTION_TYPES[i % 4]``; its answer is balanced over the letters
(exactly, for every type, when the count is a multiple of 16). Everything comes from
``seed`` and ``i``: the same call writes the same frames and questions. Dropping the few
tokens of a needle loses the answer, so keeping the right tokens under a budget is what the
benchmark measures: uniform frame sampling at 10 % of the frames sees a given needle about
one time in ten.

    python -m retake.needle --out data/needle --num-samples 64 --seed 1

The harness writes the held-out set (seed 1, 48 questions) where ``dataset=needle`` finds
nothing (``generate_needle``) and reads it as ``synthetic`` (``samples.jsonl``).
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from retake.harness.benchmarks.common import load_samples
from retake.harness.samples import LETTERS, Sample, format_prompt

QUESTION_TYPES = ("colour", "order", "count", "when")
COLOURS = {"red": (235, 35, 35), "green": (35, 200, 60), "blue": (40, 70, 235), "yellow": (235, 215, 30)}
# The four prompts have the same length in characters (so in byte-level tokens): one
# max_context then gives every question the same keep ratio (tests/test_synthetic.py).
QUESTIONS = {
    "colour": "A square flashed once, somewhere in the video, in one colour. What colour was that square?",
    "order": "Two squares of two colours flashed, one after the other. What colour was the first square?",
    "count": "A square flashed one or more times in this video. How many times did it flash?",
    "when": "A square flashed once in this video. When was the flash?",
}
OPTIONS = {
    "colour": list(COLOURS),
    "order": list(COLOURS),
    "count": ["once", "twice", "three times", "four times"],
    "when": ["first quarter", "second quarter", "third quarter", "last quarter"],
}


@dataclass(frozen=True)
class NeedleConfig:
    """num_frames, fps: the video's length and rate; size: frame side in pixels (square);
    needle_frames: how long a needle lasts (needles start on even frames so that one covers
    whole Qwen grid steps); needle_side: its side in pixels; cut_prob: chance of one abrupt
    background change per video."""

    num_frames: int = 64
    fps: int = 2
    size: int = 56
    needle_frames: int = 2
    needle_side: int = 20
    cut_prob: float = 0.5

    def __post_init__(self):
        if self.num_frames < 16 or self.num_frames % 4:
            raise ValueError(f"num_frames must be a multiple of 4, >= 16, got {self.num_frames}")
        if self.needle_frames < 1 or self.needle_frames % 2 and self.needle_frames != 1:
            raise ValueError(f"needle_frames must be 1 or even, got {self.needle_frames}")
        if not 8 <= self.needle_side < self.size:
            raise ValueError(f"needle_side must be in [8, size), got {self.needle_side}")

    @property
    def slots(self) -> int:
        """Positions a needle may start at (multiples of ``needle_frames``)."""
        return self.num_frames // max(2, self.needle_frames)


@dataclass
class NeedleSample:
    """One generated question: the frames ``[T, H, W, 3]`` uint8 and the ``Sample`` fields."""

    index: int
    question_type: str
    frames: np.ndarray
    question: str
    options: list[str]
    answer: str
    needles: list[tuple[int, str]]  # (first frame, colour)


def _answer_index(i: int, seed: int) -> int:
    """Balanced: within each type, consecutive samples cycle through a seeded permutation."""
    perm = np.random.default_rng([seed, 7919]).permutation(4)
    return int(perm[(i // len(QUESTION_TYPES)) % 4])


def _needle_slots(rng, cfg: NeedleConfig, k: int, lo: int = 0, hi: int | None = None) -> list[int]:
    """k distinct needle start frames in [lo, hi), at least one slot apart, sorted."""
    step = max(2, cfg.needle_frames)
    hi = cfg.num_frames if hi is None else hi
    slots = np.arange(-(-lo // step), (hi - cfg.needle_frames) // step + 1)
    for _ in range(1000):
        pick = np.sort(rng.choice(slots, size=k, replace=False))
        if k == 1 or np.diff(pick).min() >= 2:
            return [int(s) * step for s in pick]
    raise RuntimeError("could not place needles")


def make_sample(i: int, seed: int = 0, cfg: NeedleConfig = NeedleConfig()) -> NeedleSample:
    qtype = QUESTION_TYPES[i % len(QUESTION_TYPES)]
    ans = _answer_index(i, seed)
    rng = np.random.default_rng([seed, i])
    names = list(COLOURS)
    T = cfg.num_frames
    if qtype == "colour":
        needles = [(_needle_slots(rng, cfg, 1)[0], names[ans])]
    elif qtype == "order":
        other = int(rng.choice([c for c in range(4) if c != ans]))
        first, second = _needle_slots(rng, cfg, 2)
        needles = [(first, names[ans]), (second, names[other])]
    elif qtype == "count":
        colour = names[int(rng.integers(4))]
        needles = [(s, colour) for s in _needle_slots(rng, cfg, ans + 1)]
    else:  # when: inside quarter `ans`, a needle's length away from its edges
        q = T // 4
        needles = [(_needle_slots(rng, cfg, 1, ans * q + cfg.needle_frames, (ans + 1) * q - cfg.needle_frames)[0],
                    names[int(rng.integers(4))])]
    frames = _render(rng, cfg, needles)
    return NeedleSample(i, qtype, frames, QUESTIONS[qtype], list(OPTIONS[qtype]), LETTERS[ans], needles)


def _render(rng, cfg: NeedleConfig, needles: list[tuple[int, str]]) -> np.ndarray:
    T, S = cfg.num_frames, cfg.size
    # background: a low-saturation vertical gradient drifting slowly, one abrupt cut sometimes
    def scene():
        base = rng.uniform(60, 190)
        tint = rng.uniform(-18, 18, size=3)
        return base + tint, rng.uniform(-0.6, 0.6, size=3), rng.uniform(-25, 25)

    (col, drift, grad) = scene()
    cut = int(rng.integers(T // 8, T - T // 8)) if rng.random() < cfg.cut_prob else T
    cut_scene = scene()
    ramp = np.linspace(-0.5, 0.5, S)[:, None, None]
    out = np.empty((T, S, S, 3), dtype=np.float32)
    for t in range(T):
        if t == cut:
            col, drift, grad = cut_scene
        out[t] = np.clip(col + drift * (t - cut if t >= cut else t) + grad * ramp, 0, 255)
    # distractor: a grey dot crossing the frame
    side = max(4, S // 8)
    y0, x0 = rng.uniform(0, S - side, size=2)
    vy, vx = rng.uniform(-1.5, 1.5, size=2)
    shade = rng.choice([30.0, 225.0])
    for t in range(T):
        y = int(abs((y0 + vy * t) % (2 * (S - side)) - (S - side)))
        x = int(abs((x0 + vx * t) % (2 * (S - side)) - (S - side)))
        out[t, y : y + side, x : x + side] = shade
    # needles
    n = cfg.needle_side
    for start, colour in needles:
        y, x = (int(v) for v in rng.integers(0, S - n + 1, size=2))
        out[start : start + cfg.needle_frames, y : y + n, x : x + n] = COLOURS[colour]
    out += rng.normal(0, 2.0, size=out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def max_context_for(adapter, sample: Sample, keep_ratio: float, fps: float = 2.0, max_frames: int = 512) -> int:
    """The KV budget that keeps ``keep_ratio`` of a needle question's video tokens: its text
    tokens plus ``round(keep_ratio x video tokens)``, for the model behind ``adapter``. Every
    needle prompt has the same length, so one question's budget serves the whole benchmark."""
    from retake.video import load_video

    v = load_video(sample.video, fps=fps, max_frames=max_frames)
    inputs = adapter.prepare_video(v.frames, v.sampling_fps, v.timestamps)
    text = adapter.build_prompt(format_prompt(sample), inputs).num_text_tokens
    return text + round(keep_ratio * inputs.num_tokens)


def question_tokens_for(adapter, sample: Sample, fps: float = 2.0, max_frames: int = 512) -> int:
    """The tokens a needle question adds to the prompt without one (``engine.question_tokens``
    that makes question mode ``unknown`` budget exactly as ``aware`` does)."""
    from retake.video import load_video

    v = load_video(sample.video, fps=fps, max_frames=max_frames)
    inputs = adapter.prepare_video(v.frames, v.sampling_fps, v.timestamps)
    return adapter.build_prompt(format_prompt(sample), inputs).num_text_tokens - adapter.build_prompt("", inputs).num_text_tokens


def write_video(path: str, frames: np.ndarray, fps: int) -> str:
    """H.264 (yuv444, near-lossless) with PyAV; decord and PyAV both read it."""
    import av

    with av.open(path, mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "12", "preset": "medium", "g": "16"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_benchmark(out: str, num_samples: int, seed: int = 0, cfg: NeedleConfig = NeedleConfig(),
                    progress: bool = False) -> str:
    """``out/samples.jsonl`` (the harness's own format, ``dataset=needle``) and
    ``out/videos/n<i>.mp4``, one video per question. Returns ``out``."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    os.makedirs(os.path.join(out, "videos"), exist_ok=True)
    it = range(num_samples)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="needle videos", unit="video")
    lines = []
    for i in it:
        s = make_sample(i, seed, cfg)
        rel = os.path.join("videos", f"n{i:05d}.mp4")
        write_video(os.path.join(out, rel), s.frames, cfg.fps)
        sample = Sample(uid=f"needle-{seed}-{i:05d}", video=rel, question=s.question, options=s.options,
                        answer=s.answer, meta={"question_type": s.question_type, "needles": s.needles})
        lines.append(json.dumps(sample.to_dict()))
    with open(os.path.join(out, "samples.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "needle_config.json"), "w") as f:
        json.dump({"seed": seed, "num_samples": num_samples, **asdict(cfg)}, f, indent=2)
    return out


# ---------------------------------------------------------------- the harness's dataset=needle

NEEDLE_SAMPLES = 48  # the demo's held-out needle set (seed 1)


def command(data_root: str) -> str:
    """The command that writes the held-out set at ``data_root``."""
    return f"python -m retake.needle --out {data_root} --num-samples {NEEDLE_SAMPLES} --seed 1"


def load_needle(data_root: str) -> list[Sample]:
    """``samples.jsonl`` of ``Sample.to_dict()`` lines (as ``synthetic``), videos relative to data_root."""
    return load_samples(data_root, "needle", command)


def generate_needle(data_root: str) -> None:
    """The held-out needle set (seed 1, :data:`NEEDLE_SAMPLES` questions) at ``data_root``."""
    write_benchmark(data_root, NEEDLE_SAMPLES, seed=1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--num-samples", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1, help="1 is the held-out seed; training draws from seed 0")
    ap.add_argument("--num-frames", type=int, default=NeedleConfig.num_frames)
    ap.add_argument("--size", type=int, default=NeedleConfig.size,
                    help="frame side in px (56: Qwen2.5-VL's 14 px patches; 64 for Qwen3.5's 16 px: the same 2 x 2 tokens per step)")
    args = ap.parse_args(argv)
    cfg = NeedleConfig(num_frames=args.num_frames, size=args.size)
    write_benchmark(args.out, args.num_samples, args.seed, cfg, progress=True)
    print(f"wrote {args.num_samples} samples to {args.out}/samples.jsonl")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
