"""One multiple-choice question about one video, whatever benchmark it came from, and the
prompt / answer conventions every benchmark shares.

Benchmark loaders (``retake.harness.datasets``) turn the official annotation files into
``Sample`` lists; the lmms-eval tasks, the runner and the scoring all read this one format.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

LETTERS = "ABCDEFGHIJ"
ANSWER_INSTRUCTION = "Answer with the option's letter from the given choices directly."


@dataclass
class Sample:
    """uid: unique id of the question within its dataset (stable across runs: the key of the
    predictions file). video: path of the video file (absolute, or relative to the dataset's
    data_root before loading resolves it). options: option texts without their letters.
    answer: the correct letter, or None where the split has no public answers (MLVU test).
    subtitles: subtitle text shown before the question (LongVideoBench), else None.
    meta: the benchmark's breakdown fields (duration group, task / question type, ...)."""

    uid: str
    video: str
    question: str
    options: list[str]
    answer: str | None
    subtitles: str | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if not 2 <= len(self.options) <= len(LETTERS):
            raise ValueError(f"sample {self.uid!r}: {len(self.options)} options; 2..{len(LETTERS)} are supported")
        if self.answer is not None and self.answer not in LETTERS[: len(self.options)]:
            raise ValueError(f"sample {self.uid!r}: answer {self.answer!r} is not one of {LETTERS[: len(self.options)]}")

    @property
    def letters(self) -> str:
        return LETTERS[: len(self.options)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Sample":
        return cls(**d)


def format_prompt(sample: Sample, max_subtitle_words: int = 8000) -> str:
    """The authors' prompt for all four benchmarks:
    ``[subtitles\\n]{question}\\nOptions:\\nA. ...\\nB. ...\\nAnswer with the option's letter from
    the given choices directly.`` Subtitles are cut to their first ``max_subtitle_words`` words."""
    lines = []
    if sample.subtitles:
        words = sample.subtitles.split()
        lines.append(" ".join(words[:max_subtitle_words]))
    lines.append(sample.question.strip())
    lines.append("Options:")
    lines += [f"{letter}. {text.strip()}" for letter, text in zip(sample.letters, sample.options)]
    lines.append(ANSWER_INSTRUCTION)
    return "\n".join(lines)


_PATTERNS = [
    re.compile(r"^\s*\(?([A-J])\)?\s*$"),  # "B", "(B)"
    re.compile(r"^\s*\(?([A-J])\)?[.:,)\s]"),  # "B. text", "B) text", "(B) text", "B: text"
    re.compile(r"(?:answer|option)\s*(?:is|:)?\s*\(?([A-J])\)?(?![A-Za-z])", re.IGNORECASE),  # "The answer is B"
]


def parse_answer(text: str, letters: str = LETTERS[:4]) -> str | None:
    """The option letter a model answered, or None if the answer cannot be read.

    Accepted: the letter alone or leading the answer (``B``, ``(B)``, ``B. text``, ``B) text``)
    or stated as ``answer/option (is) B``. Never the first capital letter found anywhere (the
    authors' parser reads "Based on ..." as B); never a random letter (LongVideoBench's
    fallback). A letter outside ``letters`` is unparsable."""
    if text is None:
        return None
    for pat in _PATTERNS:
        m = pat.search(text)
        if m:
            return m.group(1) if m.group(1) in letters else None
    return None
