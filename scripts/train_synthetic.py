"""make train-synthetic: train the small needle model from scratch, on CPU, from a seed.

The model is a real Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration`` built from a small
config: a 2-block vision tower, a 4-layer language model), so every adapter, the engine and
every method run on it unchanged. It learns the needle benchmark (``retake.needle``):
training samples are drawn fresh from seed 0 (never the held-out seed 1), rendered, cut into
patches by the same preprocessing as inference, and prompted with the harness's own prompt
(``format_prompt``) through the adapter's chat template and M-RoPE positions. The loss is the
cross-entropy of the answer letter and the end-of-turn token after it, with full, ordinary
attention (no compression during training), plus three auxiliary linear probes that are not
saved: the needle colour under each video token (layer 1), "a needle in this grid step so
far" on each video token (layer 2), and the number of needles at the answer position (last
layer); docs/synthetic.md says why.

At the end the checkpoint (config, weights, tokenizer, preprocessor config) is written to
``--out`` with ``train_log.json`` (the loss curve, held-out accuracy, time) and
``loss.png``; held-out accuracy is measured through ``retake.pipeline.answer_question`` on
encoded videos, the path every benchmark run takes.

    python scripts/train_synthetic.py --out checkpoints/needle_qwen2_5_vl
    python scripts/train_synthetic.py --arch qwen3_5 --out checkpoints/needle_qwen3_5

``--arch qwen3_5`` trains the same task on a hybrid Qwen3.5 (``Qwen3_5ForConditionalGeneration``:
8 layers, Gated DeltaNet but for every 4th, which is attention; the same widths): its patch is
16 px (Qwen2.5-VL's 14), so its needle videos are 64 px square (56 there), which gives the same
2 x 2 merged tokens per grid step; its prompt has Qwen3-VL's timestamps.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time

import numpy as np
import torch

from retake.harness.samples import Sample, format_prompt, parse_answer
from retake.needle import COLOURS, QUESTION_TYPES, NeedleConfig, make_sample, max_context_for, write_benchmark

# the architectures the needle model is trained on: their sizes and the needle videos' side
ARCHS = {
    "qwen2_5_vl": {"sizes": dict(layers=4, hidden=128, heads=4, kv_heads=2), "frame": 56},
    "qwen3_5": {"sizes": dict(layers=8, hidden=128, heads=4, kv_heads=2), "frame": 64},  # 6 DeltaNet + 2 attention
}


def build(seed: int, out_dir: str, arch: str = "qwen2_5_vl"):
    """A freshly initialised model (transformers' own init, from ``seed``) saved to ``out_dir``
    with tokenizer and preprocessor config, and its adapter; the LLM attends with SDPA."""
    from retake.models import MODEL_FAMILIES
    from retake.models.qwen3_vl import QWEN3_VL_CHAT_TEMPLATE
    from retake.tiny import tiny_config, tiny_tokenizer, write_tiny_model

    sizes = ARCHS[arch]["sizes"]
    write_tiny_model(arch, out_dir, seed=seed, **sizes)  # tokenizer, preprocessor and generation configs
    tok = tiny_tokenizer()
    if arch != "qwen2_5_vl":
        tok.chat_template = QWEN3_VL_CHAT_TEMPLATE
    cfg = tiny_config(arch, tok, **sizes)
    model_class, adapter_class = MODEL_FAMILIES[cfg.model_type]

    torch.manual_seed(seed)
    cfg._attn_implementation = "sdpa"
    model = model_class()(cfg)
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok, adapter_class.from_loaded(model, tok, out_dir)


def token_labels(frames: np.ndarray, cell: int, min_pixels: int = 40) -> torch.Tensor:
    """The needle colour under each LLM video token (0 = none, 1 + index in COLOURS), in the
    tokens' order (grid step, then row-major merged cells of ``cell`` px): the target of the
    auxiliary loss."""
    T, H, W, _ = frames.shape
    hits = np.stack([(np.abs(frames.astype(np.int16) - np.array(c)).max(-1) <= 12) for c in COLOURS.values()], -1)
    hits = hits.reshape(T // 2, 2, H // cell, cell, W // cell, cell, len(COLOURS)).sum(axis=(1, 3, 5))
    label = np.where(hits.max(-1) >= min_pixels, hits.argmax(-1) + 1, 0)
    return torch.from_numpy(label.reshape(-1)).long()


def frames_at(step: int, steps: int, schedule: list[int]) -> int:
    """Curriculum: the video length of a step, ``schedule`` spread evenly over the first
    half of training, the last length for the second half (a needle is easier to find among
    fewer frames; the final length is the benchmark's)."""
    stage = min(len(schedule) - 1, step * 2 * (len(schedule) - 1) // max(1, steps)) if len(schedule) > 1 else 0
    return schedule[stage]


def step_labels(labels: torch.Tensor, tokens_per_step: int) -> torch.Tensor:
    """1 where a needle lies under this video token or an earlier one of the same grid step
    (what a token can see of its step through causal attention), else 0: the target of the
    auxiliary step probe, from ``token_labels``."""
    hit = (labels > 0).reshape(*labels.shape[:-1], -1, tokens_per_step)
    return hit.cummax(dim=-1).values.reshape(labels.shape).long()


class Batches(torch.utils.data.IterableDataset):
    """Batches of one question type and one video length (so every row has the same prompt
    layout), the types in the order of ``cycle``; every sample drawn from ``seed``, indexed by
    its type's batch count, so the stream is the same on every run and no sample repeats."""

    def __init__(self, adapter, cfg: NeedleConfig, batch_size: int, seed: int, steps: int, schedule: list[int],
                 cycle: list[str] = list(QUESTION_TYPES)):
        self.pp, self.cfg, self.batch_size, self.seed = adapter.pp, cfg, batch_size, seed
        self.steps, self.schedule, self.cycle = steps, schedule, cycle

    def __iter__(self):
        from retake.models.qwen2_vl import patchify

        seen = {t: 0 for t in QUESTION_TYPES}  # batches of each type so far
        for b in range(self.steps):
            name = self.cycle[b % len(self.cycle)]
            qtype = QUESTION_TYPES.index(name)
            cfg = dataclasses.replace(self.cfg, num_frames=frames_at(b, self.steps, self.schedule))
            rows, answers, labels, events = [], [], [], []
            for j in range(self.batch_size):
                i = (seen[name] * self.batch_size + j) * len(QUESTION_TYPES) + qtype
                s = make_sample(i, self.seed, cfg)
                frames = torch.from_numpy(s.frames).permute(0, 3, 1, 2).contiguous()
                rows.append(patchify(frames, self.pp)[0])
                answers.append(s.answer)
                labels.append(token_labels(s.frames, cell=self.pp.patch_size * self.pp.merge_size))
                events.append(len(s.needles))
            seen[name] += 1
            yield b, qtype, cfg.num_frames, torch.cat(rows), answers, torch.stack(labels), torch.tensor(events)


def prompt_for(adapter, qtype: str, cfg: NeedleConfig, grid_thw) -> tuple[torch.Tensor, torch.Tensor]:
    """input ids ``[S]`` and M-RoPE ids ``[3, S]`` of a question of this type, as inference builds them."""
    s = make_sample(QUESTION_TYPES.index(qtype), 0, cfg)
    sample = Sample(uid="x", video="", question=s.question, options=s.options, answer=s.answer)
    blank = torch.zeros(cfg.num_frames, 3, cfg.size, cfg.size, dtype=torch.uint8)  # the layout only
    video = adapter.prepare_video(blank, float(cfg.fps), [k / cfg.fps for k in range(cfg.num_frames)])
    assert tuple(video.grid_thw) == tuple(grid_thw), (video.grid_thw, grid_thw)
    p = adapter.build_prompt(format_prompt(sample), video)
    return p.input_ids, p.position_ids


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


REFERENCE_SAMPLES = 16  # the held-out questions tests/test_needle_model.py replays
REFERENCE_METHODS = {"none": None, "adaretake": 0.1, "uniform": 0.1}  # method: keep ratio


@torch.no_grad()
def evaluate(path: str, data_root: str, method: str = "none", keep_ratio: float | None = None,
             limit: int | None = None) -> dict:
    """Held-out accuracy through the inference path (decoded video, engine, the method at
    max_context = text + keep_ratio x video tokens; None: everything fits) and the parsed
    answer of every sample."""
    from retake.engine import EngineConfig
    from retake.harness.datasets import get_dataset
    from retake.methods import get_method
    from retake.models import load_adapter
    from retake.pipeline import SamplingConfig, answer_question
    adapter = load_adapter(path, dtype="float32", device="cpu")
    samples = get_dataset("needle").load(data_root)[:limit]
    # decord: the reader the committed checkpoint's figures (train_log.json, reference_answers.json)
    # were measured with, before PyAV became the harness default
    sampling = SamplingConfig(fps=2.0, max_frames=512, max_long_side=448, backend="decord")
    context = 10**6
    if keep_ratio is not None:
        context = max_context_for(adapter, samples[0], keep_ratio, sampling.fps, sampling.max_frames)
    per_type: dict[str, list[bool]] = {}
    answers = []
    for s in samples:
        res = answer_question(adapter, s.video, format_prompt(s), get_method(method), sampling,
                              EngineConfig(chunk_frames=16, max_context=context, max_new_tokens=4))
        answers.append(parse_answer(res["answer"], s.letters, s.options))
        per_type.setdefault(s.meta["question_type"], []).append(answers[-1] == s.answer)
    flat = [x for v in per_type.values() for x in v]
    return {"method": method, "keep_ratio": keep_ratio, "max_context": context if keep_ratio is not None else None,
            "accuracy": 100.0 * sum(flat) / len(flat), "num_samples": len(flat),
            "per_question_type": {k: 100.0 * sum(v) / len(v) for k, v in sorted(per_type.items())},
            "answers": answers}


def write_reference(path: str, data_root: str) -> dict:
    """``<path>/reference_answers.json``: the answers of the first held-out questions per
    reference method, which the test suite replays against the committed checkpoint."""
    ref = {m: evaluate(path, data_root, m, r, limit=REFERENCE_SAMPLES) for m, r in REFERENCE_METHODS.items()}
    with open(os.path.join(path, "reference_answers.json"), "w") as f:
        json.dump({"held_out_seed": 1, "num_samples": REFERENCE_SAMPLES, "results": ref}, f, indent=2)
    return ref


def plot_loss(log: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in log]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, [r["loss"] for r in log], lw=0.8, label="train loss (per batch)")
    k = 25
    if len(log) > k:
        smooth = np.convolve([r["loss"] for r in log], np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, lw=1.5, label=f"mean of {k}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="qwen2_5_vl", choices=sorted(ARCHS), help="the model family (default qwen2_5_vl)")
    ap.add_argument("--out", default=None, help="checkpoint directory (default checkpoints/needle_<arch>)")
    ap.add_argument("--steps", type=int, default=2600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aux-weight", type=float, default=1.0, help="weight of the auxiliary needle-colour loss (0: off)")
    ap.add_argument("--aux-layer", type=int, default=1, help="hidden state the auxiliary probe reads (0 = embeddings)")
    ap.add_argument("--step-weight", type=float, default=1.0,
                    help="weight of the auxiliary probe of 'a needle in this grid step so far' (0: off)")
    ap.add_argument("--step-layer", type=int, default=2, help="hidden state the step probe reads")
    ap.add_argument("--count-weight", type=float, default=1.0,
                    help="weight of the auxiliary probe of the number of needles, read at the answer position (0: off)")
    ap.add_argument("--cycle", default="colour,order,count,when,count",
                    help="question types of consecutive batches, repeated (count is the hard one)")
    ap.add_argument("--frames", default="32,64", help="curriculum of video lengths (frames_at); the last is the benchmark's")
    ap.add_argument("--eval-samples", type=int, default=128, help="held-out samples (seed 1) measured at the end")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare", default=None, help="a checkpoint whose train_log.json held-out accuracy to compare with")
    ap.add_argument("--reference-only", action="store_true",
                    help="no training: (re)write reference_answers.json of the checkpoint in --out")
    args = ap.parse_args(argv)
    args.out = args.out or f"checkpoints/needle_{args.arch}"
    cfg = NeedleConfig(size=ARCHS[args.arch]["frame"])
    if args.reference_only:
        with tempfile.TemporaryDirectory() as tmp:
            ref = write_reference(args.out, write_benchmark(os.path.join(tmp, "needle"), REFERENCE_SAMPLES, seed=1, cfg=cfg))
        print({m: r["accuracy"] for m, r in ref.items()})
        return 0
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    model, tok, adapter = build(args.seed, args.out, args.arch)
    model.train()
    schedule = [int(f) for f in args.frames.split(",")]
    prompts = {}  # (type, frames) -> (ids, positions)
    letter_ids = {letter: tok.convert_tokens_to_ids(letter) for letter in "ABCD"}
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    video_id = adapter.video_token_id
    # training aid, not saved: a linear probe of the needle colour on every video token
    aux_head = torch.nn.Linear(model.config.text_config.hidden_size, 1 + len(COLOURS))
    aux_class_weight = torch.tensor([0.1] + [1.0] * len(COLOURS))
    # and two for counting: "a needle in this grid step so far" on every video token, and the
    # number of needles (1-4) at the position that predicts the answer, for every question type
    width = model.config.text_config.hidden_size
    step_head, count_head = torch.nn.Linear(width, 2), torch.nn.Linear(width, 4)
    heads = [aux_head, step_head, count_head]
    tokens_per_step = (cfg.size // adapter.pp.patch_size // adapter.pp.merge_size) ** 2
    cycle = [t.strip() for t in args.cycle.split(",")]
    if not cycle or any(t not in QUESTION_TYPES for t in cycle):
        raise SystemExit(f"--cycle: question types from {QUESTION_TYPES}, got {args.cycle!r}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n] + [h.weight for h in heads]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)] + [h.bias for h in heads]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98))
    loader = torch.utils.data.DataLoader(Batches(adapter, cfg, args.batch_size, args.seed, args.steps, schedule, cycle),
                                         batch_size=None,
                                         num_workers=1, prefetch_factor=4, persistent_workers=False)
    log, start = [], time.perf_counter()
    bar = tqdm(total=args.steps, desc="train", unit="step", file=sys.stderr)
    recent_acc = {t: [] for t in QUESTION_TYPES}
    for step, (b, qtype, frames, pixels, answers, labels, events) in enumerate(loader):
        grid = (frames // 2, cfg.size // adapter.pp.patch_size, cfg.size // adapter.pp.patch_size)
        key = (QUESTION_TYPES[qtype], frames)
        if key not in prompts:
            prompts[key] = prompt_for(adapter, key[0], dataclasses.replace(cfg, num_frames=frames), grid)
        ids, pos = prompts[key]
        B = len(answers)
        letters = torch.tensor([letter_ids[a] for a in answers])
        input_ids = torch.cat([ids.expand(B, -1), letters[:, None]], dim=1)
        nxt = int(pos.max()) + 1
        position_ids = torch.cat([pos, torch.full((3, 1), nxt)], dim=1)[:, None].expand(3, B, -1)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        out = model(input_ids=input_ids, pixel_values_videos=pixels, video_grid_thw=torch.tensor([grid] * B),
                    position_ids=position_ids, mm_token_type_ids=(input_ids == video_id).long() * 2, logits_to_keep=2,
                    output_hidden_states=True)
        target = torch.stack([letters, torch.full((B,), eos)], dim=1)
        loss = torch.nn.functional.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), target.reshape(-1))
        if args.aux_weight > 0:  # the needle colour under each video token, read off an early layer
            h = out.hidden_states[args.aux_layer][input_ids == video_id].reshape(-1, aux_head.in_features)
            aux = torch.nn.functional.cross_entropy(aux_head(h), labels.reshape(-1), weight=aux_class_weight)
            loss = loss + args.aux_weight * aux
        if args.step_weight > 0:
            h = out.hidden_states[args.step_layer][input_ids == video_id].reshape(-1, width)
            loss = loss + args.step_weight * torch.nn.functional.cross_entropy(
                step_head(h), step_labels(labels, tokens_per_step).reshape(-1))
        if args.count_weight > 0:  # the hidden state (after the final norm) that predicts the letter
            h = out.hidden_states[-1][:, -2]
            loss = loss + args.count_weight * torch.nn.functional.cross_entropy(count_head(h), events.clamp(1, 4) - 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        acc = float((out.logits[:, 0].argmax(-1) == letters).float().mean())
        letter_loss = float(torch.nn.functional.cross_entropy(out.logits[:, 0].detach(), letters))
        log.append({"step": step, "type": QUESTION_TYPES[qtype], "frames": frames, "loss": float(loss), "letter_loss": letter_loss,
                    "letter_acc": acc})
        bar.update(1)
        recent_acc[QUESTION_TYPES[qtype]] = (recent_acc[QUESTION_TYPES[qtype]] + [acc])[-20:]
        if step % 20 == 0:
            recent = log[-80:]
            per_type = " ".join(f"{t} {np.mean(v):.2f}" for t, v in recent_acc.items() if v)
            bar.set_postfix_str(f"letter loss {np.mean([r['letter_loss'] for r in recent]):.3f} acc {per_type}")
    bar.close()
    train_seconds = time.perf_counter() - start
    model.eval()
    model.save_pretrained(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        held_out = write_benchmark(os.path.join(tmp, "needle"), args.eval_samples, seed=1, cfg=cfg)
        result = evaluate(args.out, held_out)
        write_reference(args.out, held_out)
    plot_loss(log, os.path.join(args.out, "loss.png"))
    summary = {"args": vars(args), "sizes": ARCHS[args.arch]["sizes"], "needle": cfg.__dict__, "train_seconds": round(train_seconds, 1),
               "torch": torch.__version__, "held_out": result, "log": log}
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump(summary, f)
    print(f"trained {args.steps} steps in {train_seconds / 60:.1f} min; held-out accuracy "
          f"{result['accuracy']:.1f} % on {result['num_samples']} samples {result['per_question_type']}")
    if args.compare:
        with open(os.path.join(args.compare, "train_log.json")) as f:
            ref = json.load(f)["held_out"]
        delta = result["accuracy"] - ref["accuracy"]
        print(f"{args.compare}: {ref['accuracy']:.1f} % on {ref['num_samples']} samples; difference {delta:+.1f} points")
        if ref["num_samples"] != result["num_samples"]:
            print("(different held-out sizes: compare with the same --eval-samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
