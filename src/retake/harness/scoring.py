"""Scoring of per-sample records into each benchmark's official metrics.

A record is what the runner writes for one sample (one line of the predictions file)::

    {"uid": str, "prediction": str | None, "parsed": "A".."J" | None,
     "answer": "A".."J" | None, "meta": Sample.meta, "error": str | None}

Rules shared by every benchmark:

- every accuracy is in percent (0-100), whatever scale lmms-eval's own task uses;
- a sample is correct iff it did not fail (``error`` is None), its answer was parsed
  (``parsed`` is not None) and ``parsed == answer``;
- a failed sample (``error`` set: unreadable video, out of memory, ...) and an unparsable
  answer both count as wrong, and are counted separately (``num_failed``,
  ``num_unparsable``; a failed sample is not also counted as unparsable);
- a breakdown lists only the groups present in the records: an absent group is never
  scored as 0 (MLVU in lmms-eval does that with ``--limit``);
- output key order is fixed (known groups in the benchmark's official order, then any
  unknown ones sorted), so ``metrics.json`` files diff cleanly;
- every accuracy comes with a 95 % confidence interval, ``<name>_ci95_low`` /
  ``<name>_ci95_high`` (percent): the Wilson score interval of the binomial proportion for an
  accuracy (:func:`wilson_interval`); for MLVU's ``m_avg`` (a mean of per-type accuracies) a
  stratified percentile bootstrap, resampling within each type, seeded (:func:`m_avg_interval`).
  Both treat questions as independent; questions on one video are not, so the intervals are
  somewhat narrow for benchmarks with many questions per video.

Every ``score_*`` function is pure: ``list[record] -> dict``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

VIDEOMME_DURATIONS = ("short", "medium", "long")
VIDEOMME_TASK_TYPES = (
    "Temporal Perception",
    "Spatial Perception",
    "Attribute Perception",
    "Action Recognition",
    "Object Recognition",
    "OCR Problems",
    "Counting Problem",
    "Temporal Reasoning",
    "Spatial Reasoning",
    "Action Reasoning",
    "Object Reasoning",
    "Information Synopsis",
)
VIDEOMME_DOMAINS = ("Knowledge", "Film & Television", "Sports Competition", "Artistic Performance", "Life Record", "Multilingual")
# the seven multiple-choice task types of MLVU dev, in the order of their annotation files
MLVU_DEV_TYPES = ("plotQA", "needle", "ego", "count", "order", "anomaly_reco", "topic_reasoning")
MLVU_TEST_TYPES = ("plotQA", "needleQA", "ego", "count", "order", "anomaly_reco", "topic_reasoning", "sportsQA", "tutorialQA")
LVB_DURATION_GROUPS = ("15", "60", "600", "3600")
# LVBench's question types: full name in video_info.meta.jsonl -> the code its leaderboard uses
LVBENCH_TYPES = {
    "key information retrieval": "KIR",
    "event understanding": "EU",
    "summarization": "Sum",
    "entity recognition": "ER",
    "reasoning": "Rea",
    "temporal grounding": "TG",
}

Record = dict


def check_records(records: list[Record], need_answers: bool = True) -> None:
    """Raise ValueError on records the scores would silently get wrong: a missing field, a
    duplicate uid (e.g. a resumed run that appended a sample twice), or no answer letter."""
    seen: set[str] = set()
    for i, r in enumerate(records):
        missing = [k for k in ("uid", "parsed", "answer", "meta", "error") if k not in r]
        if missing:
            raise ValueError(f"record {i}: missing field(s) {missing}; a record has uid, prediction, parsed, answer, meta, error")
        if r["uid"] in seen:
            raise ValueError(f"record {i}: duplicate uid {r['uid']!r}")
        seen.add(r["uid"])
        if need_answers and r["answer"] is None:
            raise ValueError(f"record {r['uid']!r} has no answer letter; this dataset's records must carry the sample's answer")


def is_failed(r: Record) -> bool:
    return r["error"] is not None


def is_unparsable(r: Record) -> bool:
    return r["error"] is None and r["parsed"] is None


def is_correct(r: Record) -> bool:
    return r["error"] is None and r["parsed"] is not None and r["parsed"] == r["answer"]


def percent(num: int, den: int) -> float | None:
    """100 * num / den, or None when there is nothing to score (never a made-up 0)."""
    return 100.0 * num / den if den else None


Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson_interval(num: int, den: int, z: float = Z95) -> tuple[float | None, float | None]:
    """The Wilson score interval of ``num / den``, in percent; (None, None) for ``den = 0``.
    Unlike the normal approximation it stays inside [0, 100] and is not empty at 0 or 100 %."""
    if not den:
        return None, None
    p = num / den
    centre = (p + z * z / (2 * den)) / (1 + z * z / den)
    half = z * math.sqrt(p * (1 - p) / den + z * z / (4 * den * den)) / (1 + z * z / den)
    low = 0.0 if num == 0 else 100.0 * max(0.0, centre - half)  # (exact at the ends, not 99.99...)
    high = 100.0 if num == den else 100.0 * min(1.0, centre + half)
    return low, high


def with_interval(name: str, num: int, den: int) -> dict:
    """``{name: percent, name_ci95_low, name_ci95_high}`` (Wilson)."""
    low, high = wilson_interval(num, den)
    return {name: percent(num, den), f"{name}_ci95_low": low, f"{name}_ci95_high": high}


def m_avg_interval(groups: list[tuple[int, int]], resamples: int = 10000, seed: int = 0) -> tuple[float | None, float | None]:
    """95 % percentile interval of the mean of per-group accuracies (percent) by a stratified
    bootstrap: each group ``(num_correct, num_samples)`` resampled with replacement on its own,
    ``resamples`` times, seeded (the same records always give the same interval). A resampled
    group's correct count is Binomial(n, k / n), which is drawn directly."""
    groups = [(k, n) for k, n in groups if n]
    if not groups:
        return None, None
    import numpy as np

    rng = np.random.default_rng(seed)
    means = np.mean([rng.binomial(n, k / n, size=resamples) / n for k, n in groups], axis=0) * 100.0
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def counts(records: list[Record]) -> dict:
    """The keys every benchmark reports: accuracy (%) with its interval, num_samples,
    num_correct, num_unparsable, num_failed."""
    n_correct = sum(map(is_correct, records))
    return {
        **with_interval("accuracy", n_correct, len(records)),
        "num_samples": len(records),
        "num_correct": n_correct,
        "num_unparsable": sum(map(is_unparsable, records)),
        "num_failed": sum(map(is_failed, records)),
    }


def _ordered(keys: Iterable[str], known: Iterable[str]) -> list[str]:
    keys = set(keys)
    head = [k for k in known if k in keys]
    return head + sorted(keys - set(head))


def breakdown(records: list[Record], groups_of: Callable[[Record], list[str]], known: Iterable[str] = ()) -> dict:
    """Accuracy per group: ``{group: {"accuracy", "accuracy_ci95_low", "accuracy_ci95_high",
    "num_samples", "num_correct"}}``.

    ``groups_of(record)`` lists the groups a record belongs to (several for an LVBench
    question with several types: it counts in each). Only groups present appear, ``known``
    ones first in that order, the rest sorted."""
    members: dict[str, list[Record]] = {}
    for r in records:
        for g in groups_of(r):
            members.setdefault(str(g), []).append(r)
    out = {}
    for g in _ordered(members, known):
        n_correct = sum(map(is_correct, members[g]))
        out[g] = {**with_interval("accuracy", n_correct, len(members[g])), "num_samples": len(members[g]),
                  "num_correct": n_correct}
    return out


def _meta(key: str) -> Callable[[Record], list[str]]:
    """Groups from one meta field; a record without it is in no group of that breakdown."""
    return lambda r: [str(r["meta"][key])] if r["meta"].get(key) is not None else []


def score_accuracy(records: list[Record]) -> dict:
    """Plain accuracy plus a per-``question_type`` breakdown where the meta has one
    (the synthetic benchmark)."""
    check_records(records)
    return {**counts(records), "per_question_type": breakdown(records, _meta("question_type"))}


def score_videomme(records: list[Record]) -> dict:
    """VideoMME: accuracy overall, per duration (short/medium/long), per task type and per
    domain. Meta fields: duration, task_type, domain."""
    check_records(records)
    return {
        **counts(records),
        "per_duration": breakdown(records, _meta("duration"), VIDEOMME_DURATIONS),
        "per_task_type": breakdown(records, _meta("task_type"), VIDEOMME_TASK_TYPES),
        "per_domain": breakdown(records, _meta("domain"), VIDEOMME_DOMAINS),
    }


def score_mlvu_dev(records: list[Record]) -> dict:
    """MLVU dev: ``m_avg`` (the headline) = mean of the per-type accuracies over the types
    present in the records; ``accuracy`` is the plain mean over questions. Meta: question_type."""
    check_records(records)
    per_type = breakdown(records, _meta("question_type"), MLVU_DEV_TYPES)
    accs = [v["accuracy"] for v in per_type.values()]
    low, high = m_avg_interval([(v["num_correct"], v["num_samples"]) for v in per_type.values()])
    return {
        "m_avg": sum(accs) / len(accs) if accs else None,
        "m_avg_ci95_low": low,
        "m_avg_ci95_high": high,
        **counts(records),
        "per_question_type": per_type,
    }


def score_mlvu_test(records: list[Record]) -> dict:
    """MLVU test has no public answers: counts only (accuracy is None; the score comes from
    the leaderboard, see ``export_mlvu_test_submission``)."""
    check_records(records, need_answers=False)
    answered = [r for r in records if r["error"] is None and r["parsed"] is not None]
    groups = _meta("question_type")
    per_type: dict[str, int] = {}
    for r in records:
        for g in groups(r):
            per_type[g] = per_type.get(g, 0) + 1
    return {
        "num_answered": len(answered),
        "accuracy": None,
        "num_samples": len(records),
        "num_correct": None,
        "num_unparsable": sum(map(is_unparsable, records)),
        "num_failed": sum(map(is_failed, records)),
        "per_question_type": {g: {"num_samples": per_type[g]} for g in _ordered(per_type, MLVU_TEST_TYPES)},
    }


def score_longvideobench(records: list[Record]) -> dict:
    """LongVideoBench: accuracy overall, per duration group (15/60/600/3600 s) and per
    question category. Meta: duration_group, question_category."""
    check_records(records)
    return {
        **counts(records),
        "per_duration_group": breakdown(records, _meta("duration_group"), LVB_DURATION_GROUPS),
        "per_question_category": breakdown(records, _meta("question_category")),
    }


def score_lvbench(records: list[Record]) -> dict:
    """LVBench: accuracy overall and per question type (KIR, EU, Sum, ER, Rea, TG); a
    question with several types counts in each. Meta: question_type (list of codes)."""
    check_records(records)
    return {
        **counts(records),
        "per_question_type": breakdown(records, lambda r: list(r["meta"].get("question_type") or []), LVBENCH_TYPES.values()),
    }
