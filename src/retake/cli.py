"""Command line: ``retake tiny-model`` and ``retake ask``."""

from __future__ import annotations

import argparse
import json
import sys


def _tiny_model(args) -> int:
    from .tiny import write_tiny_model

    path = write_tiny_model(args.arch, args.out_dir, seed=args.seed)
    print(path)
    return 0


def _ask(args) -> int:
    from .engine import EngineConfig
    from .methods import get_method
    from .models import load_adapter
    from .pipeline import SamplingConfig, answer_question
    from .video import VideoDecodeError

    try:
        params = json.loads(args.method_args) if args.method_args else {}
        method = get_method(args.method, **params)
        engine = EngineConfig(
            chunk_frames=args.chunk_frames, max_context=args.max_context,
            max_new_tokens=args.max_new_tokens, max_guide_tokens=args.max_guide_tokens,
            reforge_positions=args.reforge_positions,
        )
        sampling = SamplingConfig(fps=args.fps, max_frames=args.max_frames, max_long_side=args.max_long_side, backend=args.backend,
                                  resize=args.resize)
        device_map = json.loads(args.device_map) if (args.device_map or "").startswith("{") else args.device_map
        adapter = load_adapter(args.model, dtype=args.dtype, device=args.device, device_map=device_map,
                               rope_scaling_factor=args.rope_scaling_factor)
        result = answer_question(adapter, args.video, args.question, method, sampling, engine)
    except (ValueError, VideoDecodeError) as e:
        print(f"retake ask: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(result["answer"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retake", description="Training-free long-video KV compression for video LLMs.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("tiny-model", help="write a tiny randomly initialised checkpoint (offline)")
    from .tiny import TINY_ARCHS

    t.add_argument("out_dir")
    t.add_argument("--arch", choices=TINY_ARCHS, default="qwen2_vl")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_tiny_model)

    a = sub.add_parser("ask", help="answer a question about a video")
    a.add_argument("video")
    a.add_argument("question")
    a.add_argument("--model", required=True, help="local checkpoint directory or hub id")
    a.add_argument("--method", default="none")
    a.add_argument("--method-args", default=None, help='JSON object of method parameters, e.g. \'{"w_min": 1}\'')
    a.add_argument("--fps", type=float, default=2.0)
    a.add_argument("--max-frames", type=int, default=2048)
    a.add_argument("--max-long-side", type=int, default=448)
    a.add_argument("--backend", choices=("decord", "pyav"), default="pyav")
    a.add_argument("--resize", choices=("uint8", "float32"), default="uint8", help="bicubic resize kernel")
    a.add_argument("--max-context", type=int, default=16384)
    a.add_argument("--chunk-frames", type=int, default=32)
    a.add_argument("--max-guide-tokens", type=int, default=None)
    a.add_argument("--max-new-tokens", type=int, default=128)
    a.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    a.add_argument("--device", default=None, help="cuda, cpu, cuda:1, ... (default: cuda if available)")
    a.add_argument("--device-map", default=None,
                   help='model parallel over several devices: "auto" (72B across the visible GPUs) or a JSON map')
    a.add_argument("--rope-scaling-factor", type=float, default=None, help="YaRN factor for the LLM's RoPE (papers: 4)")
    a.add_argument("--reforge-positions", action="store_true",
                   help="compress the kept tokens' temporal ids per layer (the authors use it on VideoMME and LVBench)")
    a.add_argument("--json", action="store_true", help="print one JSON object with the answer and measurements")
    a.set_defaults(func=_ask)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
