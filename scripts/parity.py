"""Parity of our engine with lmms-eval 0.7.3's own Qwen wrappers, sample by sample.

Run in the parity environment (``bash scripts/parity_env.sh`` builds ``.venv-parity``: lmms-eval
with qwen-vl-utils and torchvision beside this package). Three modes:

    # lmms-eval's side: its chat class (qwen2_5_vl_chat / qwen3_vl_chat, picked from the
    # checkpoint's model_type) on 16 needle questions and the real clips, model_args as on
    # lmms-eval's command line
    .venv-parity/bin/python scripts/parity.py --out parity_out/lmms_default
    .venv-parity/bin/python scripts/parity.py --out parity_out/lmms_matched \\
        --model-args max_num_frames=64,min_pixels=3136,max_pixels=3136

    # ours: the engine (retake.pipeline) with Hydra overrides, the same samples and fields
    .venv-parity/bin/python scripts/parity.py --ours --out parity_out/ours -- protocol=lmms_eval method=none

    # a table of the differences between two outputs
    .venv-parity/bin/python scripts/parity.py --compare parity_out/lmms_default parity_out/ours

Each output folder holds ``records.jsonl`` (one line per sample: frame indices, grid, token ids'
length and hash, pixel checksum, answer, top-k of the first step's logits, ...), ``meta.json``
(versions, arguments) and ``tensors/<uid>.pt`` (input_ids, the first step's logits as a full
vector, position ids, the pixel tensor when small).

lmms-eval's side is driven the way its evaluator drives it: the wrapper is built with the given
model_args and ``generate_until`` gets one ``Instance`` per sample whose ``doc_to_messages`` is
lmms-eval's own default (``ConfigurableMessagesTask._build_user_turn``: the video, then the text).
What it builds is read, not rebuilt: ``process_vision_info`` (frames, metadata) and the model's
``generate`` (the processor's output, the first step's logits) are wrapped for the call.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = ROOT / "checkpoints" / "needle_qwen2_5_vl"
REAL_VIDEOS = ("vtest.avi", "cityCC0.mpg")
# lmms-eval's VideoMME task's generation_kwargs (lmms_eval/tasks/videomme/videomme.yaml)
DEFAULT_GEN_KWARGS = {"max_new_tokens": 16, "temperature": 0, "top_p": 1.0, "num_beams": 1, "do_sample": False}
TOPK = 10
SAVE_PIXELS_MAX = 4_000_000  # pixel tensors up to this many values are saved whole
REAL_QUESTION = "What is happening in this video?"
REAL_OPTIONS = ["People walk through a square or along a street.", "Cars drive through a city.",
                "A bird flies over water.", "Nothing moves at all."]


# -- samples -----------------------------------------------------------------------------------

def default_video_dir() -> Path:
    """Where scripts/parity_env.sh puts the real clips (inside the parity environment)."""
    return Path(sys.prefix) / "share" / "parity-videos"


def checkpoint_patch_size(checkpoint: Path) -> int:
    with open(checkpoint / "config.json") as f:
        cfg = json.load(f)
    return int(cfg.get("vision_config", {}).get("patch_size", 14))


def needle_samples(folder: Path, num: int, checkpoint: Path) -> list[dict]:
    """The first ``num`` needle questions of ``folder/samples.jsonl``; written there (held-out
    seed 1, the frame side matching the checkpoint's patch: 56 px, or 64 px for 16 px patches)
    when the file is missing."""
    from retake.harness.samples import Sample, format_prompt

    path = folder / "samples.jsonl"
    if not path.exists():
        from retake.needle import NeedleConfig, write_benchmark

        size = 64 if checkpoint_patch_size(checkpoint) == 16 else 56
        write_benchmark(str(folder), num, seed=1, cfg=NeedleConfig(size=size))
    out = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            s = Sample.from_dict(json.loads(line))
            video = s.video if os.path.isabs(s.video) else str(folder / s.video)
            out.append({"uid": s.uid, "video": video, "prompt": format_prompt(s), "answer": s.answer,
                        "kind": "needle", "question_type": s.meta.get("question_type")})
            if len(out) == num:
                break
    return out


def real_samples(paths: list[str]) -> list[dict]:
    from retake.harness.samples import Sample, format_prompt

    out = []
    for p in paths:
        s = Sample(uid=f"real-{Path(p).name}", video=str(p), question=REAL_QUESTION, options=REAL_OPTIONS, answer="A")
        out.append({"uid": s.uid, "video": str(p), "prompt": format_prompt(s), "answer": None, "kind": "real",
                    "question_type": None})
    return out


def collect_samples(args) -> list[dict]:
    samples = []
    if args.needle_count > 0:
        folder = Path(args.needle) if args.needle else Path(args.out) / "needle_data"
        samples += needle_samples(folder, args.needle_count, Path(args.checkpoint))
    videos = list(args.video or [])
    if not args.no_real and not videos:
        d = Path(args.video_dir) if args.video_dir else default_video_dir()
        found = [str(d / n) for n in REAL_VIDEOS if (d / n).exists()]
        if len(found) < len(REAL_VIDEOS):
            print(f"note: real clips missing in {d} (scripts/parity_env.sh fetches them); found {found}", file=sys.stderr)
        videos = found
    samples += real_samples(videos)
    if args.only:
        samples = [s for s in samples if any(k in s["uid"] for k in args.only.split(","))]
    return samples


# -- the saved fields ----------------------------------------------------------------------------

def sha(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def tensor_stats(t: torch.Tensor) -> dict:
    f = t.detach().float()
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "sha256_16": sha(t),
            "sum": float(f.sum()), "mean": float(f.mean()), "min": float(f.min()), "max": float(f.max())}


def topk(logits: torch.Tensor, tokenizer, k: int = TOPK) -> list[dict]:
    v, i = logits.float().topk(min(k, logits.numel()))
    return [{"id": int(a), "token": tokenizer.decode([int(a)]), "logit": float(b)} for a, b in zip(i, v)]


class Writer:
    def __init__(self, out: Path, meta: dict):
        self.out = out
        (out / "tensors").mkdir(parents=True, exist_ok=True)
        with open(out / "meta.json", "w") as f:
            json.dump(meta, f, indent=2, default=str)
        self.f = open(out / "records.jsonl", "w")  # noqa: SIM115 - closed by close(), written per sample

    def write(self, record: dict, tensors: dict) -> None:
        torch.save(tensors, self.out / "tensors" / f"{record['uid']}.pt")
        self.f.write(json.dumps(record, default=str) + "\n")
        self.f.flush()

    def close(self):
        self.f.close()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0], "torch_threads": torch.get_num_threads()}
    for name in ("torch", "torchvision", "transformers", "lmms_eval", "qwen_vl_utils", "decord", "av", "retake"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


# -- lmms-eval's side ----------------------------------------------------------------------------

def lmms_wrapper_class(checkpoint: Path, kind: str):
    with open(checkpoint / "config.json") as f:
        model_type = json.load(f)["model_type"]
    family = "qwen2_5_vl" if model_type == "qwen2_5_vl" else "qwen3_vl"  # qwen3_vl, qwen3_5(_moe): one wrapper
    module = __import__(f"lmms_eval.models.{kind}.{family}", fromlist=["x"])
    cls = getattr(module, "Qwen2_5_VL" if family == "qwen2_5_vl" else "Qwen3_VL")
    return module, cls, family


def run_lmms(args, samples: list[dict]) -> None:
    from lmms_eval.api.instance import Instance
    from lmms_eval.api.task import ConfigurableMessagesTask
    from lmms_eval.utils import simple_parse_args_string

    checkpoint = Path(args.checkpoint)
    module, cls, family = lmms_wrapper_class(checkpoint, args.wrapper)
    model_args = simple_parse_args_string(args.model_args or "")
    gen_kwargs = json.loads(args.gen_kwargs) if args.gen_kwargs else dict(DEFAULT_GEN_KWARGS)
    t0 = time.time()
    lm = cls(pretrained=str(checkpoint), device="cpu", device_map="cpu", **model_args)
    load_s = time.time() - t0
    lm.task_dict = {"parity": {"test": {}}}

    # what the wrapper builds, read where it passes: frames and metadata from process_vision_info,
    # the processor's output and the first step's logits from the model's generate
    rec: dict = {}
    orig_pvi = module.process_vision_info

    def process_vision_info(*a, **kw):
        result = orig_pvi(*a, **kw)
        videos = result[1]
        rec["vision"] = []
        for v in videos or []:
            frames, meta = v if isinstance(v, tuple) else (v, None)
            rec["vision"].append((frames, meta))
        return result

    module.process_vision_info = process_vision_info
    model = lm.model
    orig_generate = model.generate

    def generate(*a, **kw):
        rec["generate_kwargs"] = {k: v for k, v in kw.items() if not torch.is_tensor(v)}
        rec["inputs"] = {k: v.detach().cpu().clone() for k, v in kw.items() if torch.is_tensor(v)}
        out = orig_generate(*a, **kw, output_logits=True, output_scores=True, return_dict_in_generate=True)
        rec["first_logits"] = out.logits[0][0].detach().float().cpu()  # raw, before logits processors
        rec["first_scores"] = out.scores[0][0].detach().float().cpu()  # after them (what greedy argmaxes)
        return out.sequences

    model.generate = generate

    meta = {"side": "lmms_eval", "wrapper": f"{cls.__module__}.{cls.__name__}", "checkpoint": str(checkpoint),
            "model_args": model_args, "gen_kwargs": gen_kwargs, "dtype": str(next(model.parameters()).dtype),
            "versions": versions(), "load_seconds": load_s,
            "video_reader": _video_reader(), "argv": sys.argv}
    writer = Writer(Path(args.out), meta)
    try:
        for n, s in enumerate(samples):
            rec.clear()
            doc_id = n
            lm.task_dict["parity"]["test"][doc_id] = {"video": s["video"], "prompt": s["prompt"]}
            if args.wrapper == "chat":
                def doc_to_messages(doc):
                    return ConfigurableMessagesTask._build_user_turn([doc["video"]], doc["prompt"])

                arguments = (s["prompt"], doc_to_messages, dict(gen_kwargs), doc_id, "parity", "test")
            else:
                arguments = (s["prompt"], dict(gen_kwargs), lambda doc: [doc["video"]], doc_id, "parity", "test")
            inst = Instance(request_type="generate_until", arguments=arguments, idx=0,
                            metadata={"task": "parity", "doc_id": doc_id, "repeats": 1})
            t = time.time()
            try:
                result = lm.generate_until([inst])[0]
            except Exception as e:  # noqa: BLE001 - one sample's failure is recorded, the rest run
                writer.write({"uid": s["uid"], "video": s["video"], "error": f"{type(e).__name__}: {e}"}, {})
                print(f"[lmms] {s['uid']}: FAILED {type(e).__name__}: {e}", flush=True)
                continue
            answer = getattr(result, "text", result)
            record, tensors = lmms_record(s, answer, rec, lm, model, family)
            record["seconds"] = round(time.time() - t, 3)
            writer.write(record, tensors)
            print(f"[lmms] {s['uid']}: {answer!r} frames={record.get('num_frames')} grid={record.get('video_grid_thw')} "
                  f"({record['seconds']} s)", flush=True)
    finally:
        writer.close()
        module.process_vision_info = orig_pvi


def _video_reader() -> str | None:
    try:
        from qwen_vl_utils.vision_process import get_video_reader_backend

        return get_video_reader_backend()
    except Exception:  # noqa: BLE001
        return None


def lmms_record(s: dict, answer: str, rec: dict, lm, model, family: str) -> tuple[dict, dict]:
    inputs = rec.get("inputs", {})
    record = {"uid": s["uid"], "video": s["video"], "kind": s["kind"], "question_type": s["question_type"],
              "gold": s["answer"], "answer": answer, "error": None}
    tensors = {}
    vision = rec.get("vision") or []
    if vision:
        frames, meta = vision[0]
        idx = meta.get("frames_indices") if meta else None
        idx = [int(i) for i in (idx.tolist() if hasattr(idx, "tolist") else idx)] if idx is not None else None
        record.update(frame_indices=idx, num_frames=int(frames.shape[0]),
                      video_fps=float(meta["fps"]) if meta and meta.get("fps") is not None else None,
                      total_frames=int(meta["total_num_frames"]) if meta else None,
                      sampled_fps=(len(idx) / meta["total_num_frames"] * meta["fps"]) if meta and idx else None,
                      first_resize_hw=list(frames.shape[-2:]), first_resize=tensor_stats(frames))
        # qwen-vl-utils returns float frames: whole numbers where its resize rounded
        record["first_resize"]["integral"] = bool(torch.equal(frames, frames.round()))
    ids = inputs.get("input_ids")
    if ids is not None:
        record.update(num_input_ids=int(ids.shape[-1]), input_ids_sha256_16=sha(ids))
        tensors["input_ids"] = ids[0]
    for key in ("video_grid_thw", "second_per_grid_ts"):
        if key in inputs:
            record[key] = inputs[key].tolist()
    pv = inputs.get("pixel_values_videos")
    if pv is not None:
        record["pixel_values_videos"] = tensor_stats(pv)
        if pv.numel() <= SAVE_PIXELS_MAX:
            tensors["pixel_values_videos"] = pv
    if "first_logits" in rec:
        tensors["first_logits"] = rec["first_logits"]
        tensors["first_scores"] = rec["first_scores"]
        record["top_logits"] = topk(rec["first_logits"], lm.tokenizer)
        record["first_token"] = record["top_logits"][0]["token"]
        record["scores_differ_from_logits"] = not torch.equal(rec["first_logits"], rec["first_scores"])
    record["generate_kwargs"] = {k: v for k, v in rec.get("generate_kwargs", {}).items()
                                 if isinstance(v, (int, float, str, bool, type(None), list))}
    # the 3-D positions transformers gives this prompt (its get_rope_index, as generate calls it)
    try:
        import inspect

        fn = model.model.get_rope_index
        params = inspect.signature(fn).parameters
        kw = {k: inputs[k] for k in ("mm_token_type_ids", "video_grid_thw", "second_per_grid_ts", "attention_mask")
              if k in inputs and k in params}
        pos, delta = fn(inputs["input_ids"], **kw)
        tensors["position_ids"] = pos[:, 0]
        record["rope_delta"] = int(delta.flatten()[0])
        vid = inputs["input_ids"][0] == model.config.video_token_id
        if vid.any():
            last = int(vid.nonzero().max())
            record["positions"] = {"video_max_temporal": int(pos[0, 0, vid].max()),
                                   "after_video": [int(x) for x in pos[:, 0, last + 1]],
                                   "last_prompt": [int(x) for x in pos[:, 0, -1]]}
    except Exception as e:  # noqa: BLE001
        record["positions_error"] = f"{type(e).__name__}: {e}"
    tensors["video_grid_thw"] = inputs.get("video_grid_thw")
    if record.get("frame_indices") is not None:
        tensors["frame_indices"] = torch.tensor(record["frame_indices"])
    return record, tensors


# -- our side ------------------------------------------------------------------------------------

def compose_config(overrides: list[str]):
    """The cell config ``python -m retake.run <overrides>`` would run, checked against the schema."""
    from hydra import compose, initialize_config_dir

    from retake.harness.runner import resolve_config
    from retake.harness.schema import register
    from retake.run import CONFIG_PATH

    register()
    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return resolve_config(cfg)


def run_ours(args, samples: list[dict], overrides: list[str]) -> int:
    from dataclasses import asdict, replace

    from omegaconf import OmegaConf

    from retake.engine import Engine
    from retake.harness.runner import model_args
    from retake.methods import get_method
    from retake.pipeline import answer_question, prepare_video

    if args.checkpoint_given:
        overrides = [f"model.pretrained={args.checkpoint}", *overrides]
    try:
        cfg = compose_config(overrides)
    except Exception as e:  # noqa: BLE001 - e.g. a config group (protocol=...) that does not exist yet
        print(f"SKIP --ours: the overrides {overrides} do not compose ({type(e).__name__}: {e})", file=sys.stderr)
        return 0 if not args.strict else 2
    margs = model_args(cfg, None, None)
    adapter = margs.model.load(device="cpu")
    method = get_method(margs.method, **margs.method_args)
    sampling = margs.sampling
    engine_cfg = replace(margs.engine, max_new_tokens=args.max_new_tokens)
    system_prompt = getattr(margs.model, "system_prompt", None)
    tok = adapter.tokenizer if hasattr(adapter, "tokenizer") else None
    model = adapter.model
    meta = {"side": "ours", "overrides": overrides, "checkpoint": str(margs.model.pretrained),
            "config": OmegaConf.to_container(cfg, resolve=True), "sampling": asdict(sampling),
            "engine": asdict(engine_cfg), "dtype": str(next(model.parameters()).dtype), "versions": versions(),
            "argv": sys.argv}
    writer = Writer(Path(args.out), meta)
    runner = Engine(adapter, engine_cfg)
    try:
        for s in samples:
            t = time.time()
            try:
                pv = prepare_video(adapter, s["video"], sampling, sampling.max_frames)
                prompt = adapter.build_prompt(s["prompt"], pv.inputs, system_prompt=system_prompt)
                out = runner.run(pv.inputs, prompt, method)
                result = answer_question(adapter, s["video"], s["prompt"], method, sampling, engine_cfg,
                                         system_prompt=system_prompt)
            except Exception as e:  # noqa: BLE001
                writer.write({"uid": s["uid"], "video": s["video"], "error": f"{type(e).__name__}: {e}"}, {})
                print(f"[ours] {s['uid']}: FAILED {type(e).__name__}: {e}", flush=True)
                continue
            inputs = pv.inputs
            fps = pv.video_fps
            idx = [round(ts * fps) for ts in inputs.timestamps]
            ids = prompt.input_ids
            record = {"uid": s["uid"], "video": s["video"], "kind": s["kind"], "question_type": s["question_type"],
                      "gold": s["answer"], "answer": result["answer"], "engine_answer": adapter.decode(out.tokens),
                      "error": None, "frame_indices": idx, "num_frames": pv.num_frames, "video_fps": fps,
                      "total_frames": pv.decoded_frames, "sampled_fps": pv.sampling_fps,
                      "frame_size": list(pv.frame_size), "num_input_ids": int(ids.shape[-1]),
                      "input_ids_sha256_16": sha(ids.view(1, -1)),
                      "video_grid_thw": [list(inputs.grid_thw)], "pixel_values_videos": tensor_stats(inputs.pixel_values),
                      "seconds": round(time.time() - t, 3)}
            tensors = {"input_ids": ids, "first_logits": out.first_logits.float(), "position_ids": prompt.position_ids,
                       "frame_indices": torch.tensor(idx), "video_grid_thw": torch.tensor([list(inputs.grid_thw)])}
            if inputs.pixel_values.numel() <= SAVE_PIXELS_MAX:
                tensors["pixel_values_videos"] = inputs.pixel_values
            if tok is not None:
                record["top_logits"] = topk(out.first_logits, tok)
                record["first_token"] = record["top_logits"][0]["token"]
            vs, ve = prompt.video_start, prompt.video_end
            pos = prompt.position_ids
            record["positions"] = {"video_max_temporal": int(pos[0, vs:ve].max()),
                                   "after_video": [int(x) for x in pos[:, ve]] if ve < pos.shape[1] else None,
                                   "last_prompt": [int(x) for x in pos[:, -1]]}
            writer.write(record, tensors)
            print(f"[ours] {s['uid']}: {record['answer']!r} frames={record['num_frames']} grid={record['video_grid_thw']} "
                  f"({record['seconds']} s)", flush=True)
    finally:
        writer.close()
    return 0


# -- compare -------------------------------------------------------------------------------------

def load_output(folder: Path) -> tuple[dict, dict]:
    with open(folder / "meta.json") as f:
        meta = json.load(f)
    recs = {}
    with open(folder / "records.jsonl") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                recs[r["uid"]] = r
    return meta, recs


def compare(a: Path, b: Path, require: str | None = None) -> int:
    """Print the differences; ``require``: ``answers`` (every answer identical, and the inputs) or
    ``inputs`` (frames, grid and token ids identical, the first step's argmax the same): exit 1
    when not so (``make parity``)."""
    ma, ra = load_output(a)
    mb, rb = load_output(b)
    print(f"A: {a} ({ma.get('side')}, {ma.get('wrapper') or ma.get('overrides')}, dtype {ma.get('dtype')})")
    print(f"B: {b} ({mb.get('side')}, {mb.get('wrapper') or mb.get('overrides')}, dtype {mb.get('dtype')})")
    head = ("uid", "answer A", "answer B", "same", "max|dlogit|", "top1", "frames", "grid", "ids", "pixels")
    rows = []
    same_answers = 0
    failed = []
    common = [u for u in ra if u in rb]
    for uid in common:
        x, y = ra[uid], rb[uid]
        if x.get("error") or y.get("error"):
            rows.append((uid, x.get("error") or x.get("answer"), y.get("error") or y.get("answer"), "error", "", "", "", "", "", ""))
            failed.append(uid)
            continue
        same = x["answer"] == y["answer"]
        same_answers += same
        dlogit = top1 = ""
        ta, tb = _tensors(a, uid), _tensors(b, uid)
        if "first_logits" in ta and "first_logits" in tb and ta["first_logits"].shape == tb["first_logits"].shape:
            d = (ta["first_logits"] - tb["first_logits"]).abs().max()
            dlogit = f"{float(d):.4g}"
            top1 = "same" if int(ta["first_logits"].argmax()) == int(tb["first_logits"].argmax()) else "DIFF"
        frames = "same" if x.get("frame_indices") == y.get("frame_indices") else f"DIFF ({x.get('num_frames')} vs {y.get('num_frames')})"
        grid = "same" if x.get("video_grid_thw") == y.get("video_grid_thw") else f"{x.get('video_grid_thw')} vs {y.get('video_grid_thw')}"
        ids = "same" if x.get("input_ids_sha256_16") == y.get("input_ids_sha256_16") else f"DIFF ({x.get('num_input_ids')} vs {y.get('num_input_ids')})"
        pix = ""
        pa, pb = ta.get("pixel_values_videos"), tb.get("pixel_values_videos")
        if pa is not None and pb is not None and pa.shape == pb.shape:
            pix = f"max {float((pa.float() - pb.float()).abs().max()):.3g}"
        elif x.get("pixel_values_videos") and y.get("pixel_values_videos"):
            sa, sb = x["pixel_values_videos"], y["pixel_values_videos"]
            pix = "same" if sa["sha256_16"] == sb["sha256_16"] else f"{sa['shape']} vs {sb['shape']}"
        rows.append((uid, repr(x["answer"]), repr(y["answer"]), "yes" if same else "NO", dlogit, top1, frames, grid, ids, pix))
        inputs_same = frames == grid == ids == "same" and top1 == "same"
        if (require == "answers" and not (same and inputs_same)) or (require == "inputs" and not inputs_same):
            failed.append(uid)
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    only = sorted(set(ra) ^ set(rb))
    print(f"{same_answers}/{len(common)} answers identical" + (f"; in one output only: {only}" if only else ""))
    if require and (failed or only or not common):
        print(f"PARITY FAILED ({require}): {', '.join(failed + only) or 'no common samples'}")
        return 1
    if require:
        print(f"parity holds ({require}): {len(common)} samples")
    return 0


def _tensors(folder: Path, uid: str) -> dict:
    p = folder / "tensors" / f"{uid}.pt"
    return torch.load(p, weights_only=False) if p.exists() else {}


# -- command line --------------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours", action="store_true", help="run our engine (Hydra overrides after --) instead of lmms-eval")
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), help="print the differences between two output folders")
    ap.add_argument("--require", choices=("answers", "inputs"), default=None,
                    help="--compare: exit 1 unless every answer (answers) or the inputs and first argmax (inputs) agree")
    ap.add_argument("--out", help="output folder (records.jsonl, meta.json, tensors/)")
    ap.add_argument("--checkpoint", default=None, help=f"checkpoint folder (default {DEFAULT_CHECKPOINT.relative_to(ROOT)}; "
                    "--ours: the composed config's model.pretrained unless given)")
    ap.add_argument("--model-args", default="", help="lmms-eval model_args, e.g. max_num_frames=64,min_pixels=3136,max_pixels=3136")
    ap.add_argument("--gen-kwargs", default=None, help=f"lmms-eval gen_kwargs as JSON (default VideoMME's {DEFAULT_GEN_KWARGS})")
    ap.add_argument("--wrapper", choices=("chat", "simple"), default="chat", help="lmms-eval's chat (default) or simple class")
    ap.add_argument("--needle", default=None, help="needle set folder with samples.jsonl (written there if missing; default OUT/needle_data)")
    ap.add_argument("--needle-count", type=int, default=16)
    ap.add_argument("--video", action="append", help="a real video (repeatable; default: vtest.avi and cityCC0.mpg from the parity env)")
    ap.add_argument("--video-dir", default=None, help="folder holding vtest.avi and cityCC0.mpg")
    ap.add_argument("--no-real", action="store_true", help="needle questions only")
    ap.add_argument("--only", default=None, help="comma-separated uid substrings to keep")
    ap.add_argument("--max-new-tokens", type=int, default=DEFAULT_GEN_KWARGS["max_new_tokens"],
                    help="--ours: engine.max_new_tokens (lmms-eval's tasks give it in gen_kwargs)")
    ap.add_argument("--strict", action="store_true", help="--ours: exit 2 instead of 0 when the overrides do not compose")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("overrides", nargs="*", help="--ours: Hydra overrides, e.g. protocol=lmms_eval method=none")
    args = ap.parse_args(argv)
    if args.compare:
        return compare(Path(args.compare[0]), Path(args.compare[1]), args.require)
    if not args.out:
        ap.error("--out is required")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.checkpoint_given = args.checkpoint is not None
    args.checkpoint = str(Path(args.checkpoint or DEFAULT_CHECKPOINT).resolve())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    samples = collect_samples(args)
    if not samples:
        print("no samples", file=sys.stderr)
        return 2
    if args.ours:
        return run_ours(args, samples, list(args.overrides))
    if args.overrides:
        ap.error(f"Hydra overrides {args.overrides} only go with --ours")
    run_lmms(args, samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
