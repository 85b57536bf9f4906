"""Command line: ``retake tiny-model`` and ``retake ask``."""

from __future__ import annotations

import argparse
import json
import re
import sys

_LETTER_MARK = re.compile(r"^\s*(?:\(([A-J])\)|([A-J])[.:)])\s*")  # "A. ", "(A) ", "A) ", "A: "


def _tiny_model(args) -> int:
    from .tiny import write_tiny_model

    path = write_tiny_model(args.arch, args.out_dir, seed=args.seed)
    print(path)
    return 0


def read_options(values: list[str] | None) -> list[str] | None:
    """``--options``: option texts, each with or without its letter (``"A. red"`` or ``"red"``),
    or one path of a JSON file holding that list. Returns the texts without letters."""
    import os

    from .harness.samples import LETTERS

    if not values:
        return None
    if len(values) == 1 and values[0].endswith(".json"):
        path = values[0]
        if not os.path.isfile(path):
            raise ValueError(f"--options {path}: no such file (give the options, or a JSON file of a list of them)")
        with open(path, encoding="utf-8") as f:
            try:
                values = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"--options {path}: not valid JSON ({e})") from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"--options {path}: expected a JSON list of option strings")
    if not 2 <= len(values) <= len(LETTERS):
        raise ValueError(f"--options: {len(values)} option(s) given; 2..{len(LETTERS)} are supported")
    marks = [_LETTER_MARK.match(v) for v in values]
    if not any(marks):
        return [v.strip() for v in values]
    found = [m and (m.group(1) or m.group(2)) for m in marks]
    if found != list(LETTERS[: len(values)]):
        raise ValueError(f"--options: give every option with its letter, in order (A. ..., B. ...), or none; got {values}")
    return [v[m.end():].strip() for v, m in zip(values, marks)]


def _ask(args) -> int:
    from .config import EngineConfig, ModelConfig, SamplingConfig, section_from_args
    from .harness.samples import Sample, format_prompt, parse_answer
    from .methods import get_method
    from .pipeline import answer_question
    from .video import VideoDecodeError, probe_video

    try:
        probe_video(args.video, args.backend)  # a URL, a missing or unreadable file: now, before the model loads
        options = read_options(args.options)
        question = args.question
        sample = None
        if options is not None:  # the harness's prompt: question, lettered options, the instruction
            sample = Sample(uid="ask", video=args.video, question=args.question, options=options, answer=None)
            question = format_prompt(sample)
        params = json.loads(args.method_args) if args.method_args else {}
        method = get_method(args.method, **params)
        engine = section_from_args(EngineConfig, args, "engine")
        sampling = section_from_args(SamplingConfig, args, "sampling")
        model = section_from_args(ModelConfig, args, "model")
        adapter = model.load()
        result = answer_question(adapter, args.video, question, method, sampling, engine,
                                 system_prompt=model.system_prompt)
    except (ValueError, VideoDecodeError) as e:
        print(f"retake ask: error: {e}", file=sys.stderr)
        return 2
    if sample is not None:
        result["prompt"] = question
        result["parsed"] = parse_answer(result["answer"], sample.letters, sample.options)
    for warning in result.get("warnings", []):
        print(f"retake ask: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(result))
    else:
        print(result["answer"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="retake", description="Training-free long-video KV compression for video LLMs.")
    sub = p.add_subparsers(dest="command", required=True)

    from .config import EngineConfig, ModelConfig, SamplingConfig, add_arguments

    t = sub.add_parser("tiny-model", help="write a tiny randomly initialised checkpoint (offline)")
    from .tiny import TINY_ARCHS

    t.add_argument("out_dir")
    t.add_argument("--arch", choices=TINY_ARCHS, default="qwen2_vl")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_tiny_model)

    a = sub.add_parser("ask", help="answer a question about a video")
    a.add_argument("video")
    a.add_argument("question")
    a.add_argument("--model", required=True, dest="pretrained", help="local checkpoint directory or hub id")
    a.add_argument("--options", nargs="+", metavar="OPTION", default=None,
                   help='answer options, e.g. --options "A. red" "B. blue" (letters optional), or one JSON file '
                        'of a list; the question is then asked as the harness asks it, lettered options and all')
    a.add_argument("--method", default="none")
    a.add_argument("--method-args", default=None, help='JSON object of method parameters, e.g. \'{"w_min": 1}\'')
    # every sampling, engine and model setting (retake.config), defaults and choices from there
    add_arguments(a.add_argument_group("sampling (retake.config.SamplingConfig)"), SamplingConfig)
    add_arguments(a.add_argument_group("engine (retake.config.EngineConfig)"), EngineConfig)
    add_arguments(a.add_argument_group("model loading (retake.config.ModelConfig)"), ModelConfig, skip=("pretrained",))
    a.add_argument("--json", action="store_true", help="print one JSON object with the answer and measurements")
    a.set_defaults(func=_ask)
    return p


def main(argv: list[str] | None = None) -> int:
    """Ctrl-C / SIGTERM at any moment, imports included, end with one line and 130 / 143."""
    import signal

    from .harness.interrupts import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():
            args = build_parser().parse_args(argv)
            return args.func(args)
    except KeyboardInterrupt as e:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while exiting
        print("retake: interrupted", file=sys.stderr)
        return 128 + int(getattr(e, "signum", signal.SIGINT))


if __name__ == "__main__":
    sys.exit(main())
