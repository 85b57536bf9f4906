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


_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_EMPHASIS = re.compile(r"[*_`~]+")  # markdown bold / italic / code / strike marks
_LETTER_ALONE = re.compile(r"^[\s(\[{\"']*([A-J])[\s)\]}\"'.:,;!]*$")  # "B", "(B)", "[B].", "**B**"
# a leading letter with a delimiter: "B. text", "B) text", "(B) text", "[B] text", "B: text", "B, text", "B - text"
_LEADING = re.compile(r"^[\s\"']*(?:[(\[]([A-J])[)\]]|([A-J])\s*(?:[.:)\]]|,\s|\s[-\u2013\u2014]\s|\n))")
# a leading letter and a space, for the letters that are not English words ("B because ..."; never "A man ...")
_LEADING_SPACE = re.compile(r"^[\s\"']*([B-HJ])\s+\S")
# stated: "The answer is (B)", "Answer: B", "the correct option is B", "I choose C" (keywords in any case,
# the letter upper case and not the start of a word)
_STATED = re.compile(
    r"(?i:\b(?:(?:the\s+)?(?:correct|right|best|final)?\s*(?:answer|option|choice)(?:\s+(?:is|would\s+be|should\s+be))?"
    r"|I\s+(?:choose|pick|select|would\s+(?:choose|pick|say)|go\s+with))\s*(?:[:=]|(?i:option|choice))?\s*)"
    r"[(\[]?([A-J])(?![A-Za-z0-9])"
)
_TRAILING_PUNCT = re.compile(r"[\s.!?;:,]+$")


def _clean(text: str) -> str:
    return _EMPHASIS.sub("", _THINK.sub("", text)).strip()


def parse_answer(text: str, letters: str = LETTERS[:4], options: list[str] | None = None) -> str | None:
    """The option letter a model answered, or None if the answer cannot be read.

    Read, in this order, after dropping markdown emphasis (``**B**``) and ``<think>`` blocks:

    1. the letter alone, bracketed or not (``B``, ``(B)``, ``[B].``);
    2. the letter leading the answer with a delimiter (``B. text``, ``B) text``, ``(B) text``,
       ``B: text``, ``B - text``), or with a space for the letters that are no English word
       (``B because ...``; ``A man is walking`` and ``I think ...`` are sentences, not letters);
    3. the answer stated: ``The answer is (B)``, ``Answer: B``, ``the correct option is B``,
       ``I choose B`` (the last such statement wins: reasoning ends with its conclusion);
    4. with ``options``: the answer is exactly one option's text (case and final punctuation
       aside), e.g. ``A man is walking.`` for the option of that text.

    Never the first capital letter found anywhere (the authors' parser reads "Based on ..." as
    B); never a random letter (LongVideoBench's fallback). A letter outside ``letters`` does not
    count as read."""
    if text is None:
        return None
    clean = _clean(text)
    m = _LETTER_ALONE.match(clean)
    if m:
        return m.group(1) if m.group(1) in letters else None
    for pat in (_LEADING, _LEADING_SPACE):
        m = pat.match(clean)
        if m:
            letter = next(g for g in m.groups() if g)
            if letter in letters:
                return letter
    stated = [m.group(1) for m in _STATED.finditer(clean) if m.group(1) in letters]
    if stated:
        return stated[-1]
    if options:
        said = _TRAILING_PUNCT.sub("", clean).casefold()
        for letter, option in zip(letters, options):
            if said and said == _TRAILING_PUNCT.sub("", _clean(str(option))).casefold():
                return letter
    return None
