"""The reproduction tables and plots, derived from the cells' ``metrics.json`` files only.

A finished run cell is ``<runs_root>/<model>__<method>[-<hash>]__<dataset>__<budget>__<frames>[__...]/metrics.json``
(any folder depth is read). :func:`collect` flattens every cell into one row; :func:`build_table`
puts our numbers beside the paper's; :func:`write_tables` writes ``table1..4.{md,csv}`` and
``ablation_grid.{md,csv}`` and ``cells.{md,csv}`` (every cell, accuracy beside cost);
``retake.harness.plots.plot_accuracy`` draws accuracy against keep ratio, budget, frames,
prefill time and peak memory.

The paper's numbers (AdaReTaKe, arXiv 2503.12559, Tables 1-4) are data:
``<paper_dir>/table<n>.csv``, one published number per line::

    row,label,model,method,method_params,max_frames,max_context,dataset,metric,accuracy

A paper line is matched to the cell with the same ``model``, ``method``, ``dataset``,
``max_frames`` and ``max_context`` whose method parameters are the method's defaults except
the line's ``method_params`` (``key=value``, space separated, values read as YAML), among the
cells run at the default settings: a folder name with a suffix after ``<frames>``
(``__reforge``, ``__unknown`` for question mode unknown, ``__s<hash>`` for changed sampling / engine settings, ``__limit<N>``) is a
variant, shown in the ablation grid and the plots but never matched to the paper.
``metric`` is ``primary`` (the cell's headline, named by its ``primary`` field: accuracy, or
m_avg for MLVU) or a breakdown sub-metric (``long``, ``needle``, ``order``, ``KIR``, ``TG``),
found in any nested dict of the cell's metrics (``per_duration``, ``per_question_type``,
``breakdown``, ...) under its name or an alias (:data:`SUBMETRIC_ALIASES`), directly or as
``<name>/accuracy``. Where no cell matches,
:data:`ALTERNATIVES` says where else the number may be read (VideoMME Long from the videomme
cell's duration breakdown). Two cells matching one paper line is an error naming both.
The output column of a line is its dataset for ``primary`` and the metric's name otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
import warnings
from functools import cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from .trackers import flatten

TABLES = (1, 2, 3, 4)
KEY_COLUMNS = ("model", "method", "dataset", "max_frames", "max_context")
PAPER_COLUMNS = ("row", "label", "model", "method", "method_params", "max_frames", "max_context",
                 "dataset", "metric", "accuracy")
ROW_COLUMNS = ("row", "label", "model", "method", "method_params", "max_frames", "max_context")
CELLS_TITLE = ("Every cell: primary score (%) with its 95 % interval, chance, and what it cost (keep: achieved "
               "video keep ratio; kv_per_layer: KV entries per layer after prefill; prefill_s: seconds per sample, "
               "vision included; peak_gib: accelerator peak, or the process's RSS on CPU)")
TITLES = {
    1: "Table 1: main results (max context 16K; 2048 frames for 7B, 1024 for 72B; 2 fps)",
    2: "Table 2: token-compression methods (Qwen2-VL-7B, 1024 frames, max context 1K; MLVU val = mlvu_dev)",
    3: "Table 3: ablation (Qwen2-VL-7B); avg = row mean, step = avg minus the previous row's",
    4: "Table 4: fine-grained temporal tasks (MLVU dev needle / order, LVBench KIR / TG)",
}
# (dataset, metric) of a paper line -> other (dataset, metric) that give the same number
ALTERNATIVES = {("videomme_long", "primary"): (("videomme", "long"),)}
# breakdown names a sub-metric may be stored under (compared lower-case, "_"/"-" as spaces)
SUBMETRIC_ALIASES = {
    "long": ("long",),
    "needle": ("needle", "needleqa", "needle qa"),
    "order": ("order", "action order"),
    "kir": ("kir", "key information retrieval"),
    "tg": ("tg", "temporal grounding"),
}


# a cell's status (metrics.json "status"; files written before statuses existed are done)
STATUSES = ("done", "incomplete")
# flattened columns of a cell that are not metrics
NOT_METRICS = ("method_params/", "versions/")


class MetricsError(ValueError):
    """A metrics.json that cannot be read as a cell; the message starts with its path."""


# -- reading cells ---------------------------------------------------------------------------

def format_params(params: dict) -> str:
    """``{"b": False, "a": "x"}`` -> ``"a=x b=false"`` (sorted; the paper CSVs' notation)."""
    return " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted(flatten(params).items()))


def parse_params(text) -> dict:
    """``"a=x b=false"`` -> ``{"a": "x", "b": False}``; empty / NaN -> ``{}``."""
    if not isinstance(text, str) or not text.strip():
        return {}
    out = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"method_params item {item!r} is not key=value")
        out[key] = yaml.safe_load(value)
    return out


def _is_number(v) -> bool:
    return isinstance(v, numbers.Number) and not isinstance(v, (bool, np.bool_))


def read_cell(path) -> dict:
    """One ``metrics.json`` as a flat row: the cell's fields, ``method_params`` (formatted) and
    ``method_params/<k>``, ``primary``, ``score`` (the primary metric) and its interval
    (``score_ci95_low`` / ``_high``), ``chance``, ``status``, ``failed_fraction``, ``settings``
    (:func:`settings_label`), every metric (nested ones flattened:
    ``per_duration/long/accuracy``), the efficiency block (``efficiency/prefill_seconds/mean``,
    ...), ``versions/<lib>``, ``path`` (the cell's folder) and ``variant`` (:func:`variant`).
    Raises :class:`MetricsError` naming the file if it is not a valid cell."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MetricsError(f"{path}: not readable JSON ({e})") from e
    if not (isinstance(data, dict) and isinstance(data.get("cell"), dict) and isinstance(data.get("metrics"), dict)):
        raise MetricsError(f"{path}: expected an object with 'cell' and 'metrics' objects")
    cell, metrics, primary = data["cell"], data["metrics"], data.get("primary")
    missing = [k for k in KEY_COLUMNS if k not in cell]
    if missing:
        raise MetricsError(f"{path}: cell lacks {', '.join(missing)}")
    for k in ("max_frames", "max_context"):
        if not isinstance(cell[k], int) or isinstance(cell[k], bool):
            raise MetricsError(f"{path}: cell.{k} = {cell[k]!r} is not an integer")
    if not isinstance(primary, str) or primary not in metrics:
        raise MetricsError(f"{path}: 'primary' = {primary!r} does not name a metric")
    score = metrics[primary]
    if score is not None and not _is_number(score):
        raise MetricsError(f"{path}: primary metric {primary} = {score!r} is not a number")
    params = cell.get("method_params") or {}
    if not isinstance(params, dict):
        raise MetricsError(f"{path}: cell.method_params is not an object")
    fields = {k: v for k, v in cell.items() if k not in ("method_params", "settings")}
    status = data.get("status", "done")
    if status not in STATUSES:
        raise MetricsError(f"{path}: status {status!r} is not one of {', '.join(STATUSES)}")
    return {
        **flatten(fields), "method_params": format_params(params), **flatten(params, "method_params/"),
        "primary": primary, "score": math.nan if score is None else float(score),
        "score_ci95_low": _number(metrics.get(f"{primary}_ci95_low")),
        "score_ci95_high": _number(metrics.get(f"{primary}_ci95_high")),
        "chance": _number(data.get("chance_accuracy")),
        "status": status, "failed_fraction": float(data.get("failed_fraction", 0.0)),
        "settings": settings_label(cell, path.parent) or variant(path.parent.name),
        **flatten(data.get("efficiency") or {}, "efficiency/"),
        **flatten(metrics), **flatten(data.get("versions") or {}, "versions/"), "path": str(path.parent),
        "variant": variant(path.parent.name),
    }


def _number(v) -> float:
    return float(v) if _is_number(v) else math.nan


def settings_label(cell: dict, folder: Path) -> str:
    """What a variant cell's folder-name suffix (``__reforge``, ``__unknown``, ``__s<hash>``, ``__limit<N>``)
    stands for, in words: ``"chunk_frames=8 max_new_tokens=4 reforge limit=20"``; ``""`` for
    default settings. From ``cell.settings`` (metrics.json), else from the folder's config.yaml."""
    settings = cell.get("settings")
    limit = cell.get("limit")
    if settings is None and (folder / "config.yaml").is_file():
        from omegaconf import OmegaConf

        from .runner import changed_settings, resolve_config

        cfg = resolve_config(OmegaConf.load(folder / "config.yaml"), strict=False)
        settings, limit = changed_settings(cfg), cfg.run.limit
    parts = [f"{k.split('.', 1)[-1]}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in sorted((settings or {}).items())]
    if cell.get("reforge_positions"):
        parts.append("reforge")
    if cell.get("question_mode") == "unknown":
        parts.append("question unknown")
    if cell.get("protocol", "authors") != "authors":
        parts.append(f"protocol={cell['protocol']}")
    if limit is not None:
        parts.append(f"limit={int(limit)}")
    return " ".join(parts)


def variant(folder_name: str) -> str:
    """What a cell folder's name adds after ``<model>__<method>__<dataset>__<budget>__<frames>``
    (``reforge``, ``s<hash>``, ``limit<N>``, joined by ``__``); ``""`` for a default-settings
    cell or a folder not named that way."""
    parts = folder_name.split("__")
    return "__".join(parts[5:])


def collect(runs_root) -> pd.DataFrame:
    """Every ``metrics.json`` under ``runs_root`` (recursively, sorted by path), one row per
    cell (:func:`read_cell`). A malformed file is skipped with a warning naming its path; the
    skipped paths are in ``df.attrs["skipped"]``. A missing ``runs_root`` gives no rows."""
    root = Path(runs_root)
    rows, skipped = [], []
    for path in sorted(root.rglob("metrics.json")) if root.is_dir() else []:
        try:
            rows.append(read_cell(path))
        except MetricsError as e:
            warnings.warn(f"skipping malformed metrics.json: {e}", stacklevel=2)
            skipped.append(str(path))
    base = [*KEY_COLUMNS, "method_params", "primary", "score", "score_ci95_low", "score_ci95_high", "chance", "status",
            "failed_fraction", "settings", "path", "variant"]
    df = pd.DataFrame(rows, columns=list(dict.fromkeys(base + [k for r in rows for k in r])))
    df.attrs["skipped"] = skipped
    return df


# -- paper tables ----------------------------------------------------------------------------

def load_paper(paper_dir, n: int) -> pd.DataFrame:
    """``<paper_dir>/table<n>.csv`` with its columns checked (:data:`PAPER_COLUMNS`)."""
    path = Path(paper_dir) / f"table{n}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: paper table {n} not found")
    df = pd.read_csv(path, dtype={"method_params": str, "label": str}, keep_default_na=False,
                     na_values={"accuracy": [""]})
    missing = [c for c in PAPER_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)}")
    return df


def output_column(dataset: str, metric: str) -> str:
    """The generated table's column for a paper line: the dataset, or the sub-metric's name."""
    return dataset if metric == "primary" else metric


@cache
def method_defaults(name: str) -> dict | None:
    """The registered method's scalar parameters and their defaults; None for a name the
    registry does not know (its cells are then matched on the line's parameters only)."""
    from ..methods import METHODS  # the library: imported only when a cell is matched

    if name not in METHODS:
        return None
    return {f.name: f.default for f in dataclasses.fields(METHODS[name])
            if f.init and f.default is not dataclasses.MISSING}


def expected_params(method: str, line_params) -> dict:
    """What a cell's method_params must hold for a paper line: the method's defaults updated
    with the line's ``key=value`` pairs."""
    return {**(method_defaults(method) or {}), **parse_params(line_params)}


def matching_cells(runs: pd.DataFrame, line, dataset: str) -> pd.DataFrame:
    """The default-settings cells (``variant == ""``) of ``runs`` on ``dataset`` with a paper
    line's model, method, max_frames, max_context and method parameters (:func:`expected_params`)."""
    mask = (runs["model"] == line["model"]) & (runs["method"] == line["method"]) & (runs["dataset"] == dataset)
    mask &= (runs["max_frames"] == int(line["max_frames"])) & (runs["max_context"] == int(line["max_context"]))
    mask &= runs["variant"] == ""
    if not mask.any():
        return runs[mask]
    for key, value in expected_params(line["method"], line["method_params"]).items():
        col = f"method_params/{key}"
        if col not in runs.columns:
            return runs.iloc[0:0]
        mask &= runs[col].map(lambda v, value=value: _same(v, value))
    return runs[mask]


def _same(cell_value, value) -> bool:
    """A cell's parameter equals a paper line's (``true`` never equals ``1``)."""
    a = cell_value.item() if isinstance(cell_value, np.generic) else cell_value
    return isinstance(a, bool) == isinstance(value, bool) and a == value


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(name)).strip().lower()


def metric_value(cell: pd.Series, metric: str) -> float:
    """A cell's ``primary`` score, or the breakdown sub-metric ``metric``: the value of a
    nested metric ``<group>/.../<alias>`` or ``<group>/.../<alias>/accuracy``; NaN where
    absent. Raises ValueError if the metrics hold different values under that name."""
    if metric == "primary":
        return cell["score"]
    aliases = set(SUBMETRIC_ALIASES.get(_norm(metric), (_norm(metric),)))
    found = {}
    for key, value in cell.items():
        if "/" not in str(key) or str(key).startswith(NOT_METRICS) or not _is_number(value) or pd.isna(value):
            continue
        parts = [_norm(p) for p in str(key).split("/")[1:]]
        if parts[-1] in aliases or (len(parts) > 1 and parts[-1] == "accuracy" and parts[-2] in aliases):
            found[key] = float(value)
    if len(set(found.values())) > 1:
        raise ValueError(f"{cell['path']}: breakdown has several values for {metric!r}: {found}")
    return next(iter(found.values()), math.nan)


def ours(runs: pd.DataFrame, line) -> float:
    """Our number for one paper line (NaN where no cell was run), trying the line's
    (dataset, metric) and then its :data:`ALTERNATIVES`."""
    return ours_cell(runs, line)[0]


def ours_cell(runs: pd.DataFrame, line) -> tuple[float, pd.Series | None]:
    """:func:`ours` and the cell it was read from (None where no cell was run)."""
    first = (line["dataset"], line["metric"])
    for dataset, metric in (first, *ALTERNATIVES.get(first, ())):
        cells = matching_cells(runs, line, dataset)
        if len(cells) > 1:
            paths = ", ".join(cells["path"])
            raise ValueError(f"paper line {line['label']!r} / {dataset}: several cells match: {paths}")
        if len(cells) == 1:
            value = metric_value(cells.iloc[0], metric)
            if not pd.isna(value):
                return value, cells.iloc[0]
            warnings.warn(f"{cells.iloc[0]['path']}: no {metric!r} in its metrics", stacklevel=2)
    return math.nan, None


# cost columns: name -> (flattened metrics.json column, scale); means over a row's cells
COSTS = {
    "keep": ("efficiency/achieved_keep_ratio/mean", 1.0),  # kept video tokens / the video's, mean over layers
    "kv_per_layer": ("efficiency/kv_tokens_per_layer/mean", 1.0),  # KV entries per layer after prefill
    "kv_mib_per_layer": ("efficiency/kv_bytes_per_layer/mean", 1 / 2**20),
    # a hybrid model's linear-attention states, all layers (fixed: the same whatever the budget)
    "state_mib": ("efficiency/recurrent_state_bytes/mean", 1 / 2**20),
    "prefill_s": ("efficiency/prefill_seconds/mean", 1.0),  # per sample, vision encoder included
    "peak_gib": ("efficiency/peak_memory_bytes/max", 1 / 2**30),
    "samples_per_h": ("efficiency/samples_per_hour", 1.0),
}
COST_DECIMALS = {"keep": 3, "kv_per_layer": 0, "kv_mib_per_layer": 1, "state_mib": 1, "prefill_s": 2, "peak_gib": 2, "samples_per_h": 0,
                 "failed_fraction": 3}


def cost_values(cell: pd.Series) -> dict[str, float]:
    """A cell's :data:`COSTS` (NaN where its metrics.json has none: cells before the
    efficiency block)."""
    out = {}
    for name, (column, scale) in COSTS.items():
        v = cell.get(column)
        out[name] = float(v) * scale if _is_number(v) and not pd.isna(v) else math.nan
    return out


def build_table(n: int, runs: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Paper table ``n`` with ours beside it: one row per paper row (:data:`ROW_COLUMNS`), then
    ``<column>_paper``, ``<column>_ours``, ``<column>_delta`` (ours - paper) per column, rounded
    to 1 decimal (delta from the unrounded score). Table 3 adds ``avg_*`` and ``step_*``."""
    columns = list(dict.fromkeys(output_column(d, m) for d, m in zip(paper["dataset"], paper["metric"])))
    rows = []
    for _, group in paper.groupby("row", sort=True):
        first = group.iloc[0]
        row = {c: first[c] for c in ROW_COLUMNS}
        for col in columns:
            row.update({f"{col}_paper": math.nan, f"{col}_ours": math.nan, f"{col}_delta": math.nan})
        used: dict[str, pd.Series] = {}
        for _, line in group.iterrows():
            col = output_column(line["dataset"], line["metric"])
            value, cell = ours_cell(runs, line)
            row.update({f"{col}_paper": float(line["accuracy"]), f"{col}_ours": value,
                        f"{col}_delta": value - float(line["accuracy"])})
            if cell is not None:
                used[cell["path"]] = cell
        row.update(row_costs(list(used.values())))
        rows.append(row)
    value_columns = [f"{c}_{kind}" for c in columns for kind in ("paper", "ours", "delta")]
    table = pd.DataFrame(rows, columns=[*ROW_COLUMNS, *value_columns, *COSTS, "incomplete"])
    if n == 3:
        table = add_steps(table, columns)
    return round_table(table)


def row_costs(cells: list[pd.Series]) -> dict:
    """The cost columns of a table row: means over the cells its numbers came from, and how
    many of them are incomplete (more failed samples than ``run.max_failed_fraction``)."""
    values = [cost_values(c) for c in cells]
    out = {}
    for name in COSTS:
        present = [v[name] for v in values if not math.isnan(v[name])]
        out[name] = sum(present) / len(present) if present else math.nan
    out["incomplete"] = sum(c.get("status") == "incomplete" for c in cells)
    return out


def round_table(table: pd.DataFrame) -> pd.DataFrame:
    """Accuracies to 1 decimal, cost columns to theirs (:data:`COST_DECIMALS`)."""
    decimals = {c: COST_DECIMALS.get(c, 1) for c in table.columns if pd.api.types.is_float_dtype(table[c])}
    return table.round(decimals)


def add_steps(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Table 3's derived columns: ``avg_paper`` / ``avg_ours`` (row mean over ``columns``;
    ours only where all are present), ``avg_delta`` and ``step_paper`` / ``step_ours`` (the
    paper's Δ: a row's average minus the previous row's)."""
    out = table.copy()
    for kind in ("paper", "ours"):
        out[f"avg_{kind}"] = out[[f"{c}_{kind}" for c in columns]].mean(axis=1, skipna=False)
    out["avg_delta"] = out["avg_ours"] - out["avg_paper"]
    for kind in ("paper", "ours"):
        out[f"step_{kind}"] = out[f"avg_{kind}"].diff()
    return out


# -- ablation grid ---------------------------------------------------------------------------

def combo(frames: int, context: int) -> str:
    """The grid's column name for one (max_frames, max_context)."""
    return f"{int(frames)}/{int(context)}"


def ablation_grid(runs: pd.DataFrame) -> pd.DataFrame:
    """Every cell's primary score on a grid: rows (model, dataset, method, method_params, settings),
    columns ``max_frames/max_context`` in numeric order, rounded to 1 decimal. Raises if two
    cells share a grid position (the same cell run twice under different folders)."""
    keys = ["model", "dataset", "method", "method_params", "settings"]
    if runs.empty:
        return pd.DataFrame(columns=keys)
    dup = runs.duplicated(keys + ["max_frames", "max_context"], keep=False)
    if dup.any():
        raise ValueError(f"cells share a grid position: {', '.join(runs.loc[dup, 'path'])}")
    order = sorted({(int(f), int(c)) for f, c in zip(runs["max_frames"], runs["max_context"])})
    grid = runs.assign(combo=[combo(f, c) for f, c in zip(runs["max_frames"], runs["max_context"])])
    grid = grid.pivot(index=keys, columns="combo", values="score")
    grid = grid.reindex(columns=[combo(f, c) for f, c in order]).reset_index()
    grid.columns.name = None
    return grid.sort_values(keys, kind="stable").reset_index(drop=True).round(1)


CELL_COLUMNS = ("model", "dataset", "method", "method_params", "settings", "max_frames", "max_context", "primary",
                "score", "ci95_low", "ci95_high", "chance", *COSTS, "status", "failed_fraction")


def cells_table(runs: pd.DataFrame, sort: bool = True) -> pd.DataFrame:
    """Every cell, accuracy beside cost: the primary score with its 95 % interval, chance, the
    :data:`COSTS` columns and the cell's status, sorted by model, dataset, method, budget
    (``sort=False``: in the order of ``runs``)."""
    rows = []
    for _, cell in runs.iterrows():
        rows.append({**{c: cell[c] for c in ("model", "dataset", "method", "method_params", "settings", "max_frames",
                                            "max_context", "primary", "score")},
                     "ci95_low": cell["score_ci95_low"], "ci95_high": cell["score_ci95_high"], "chance": cell["chance"],
                     **cost_values(cell), "status": cell["status"], "failed_fraction": cell["failed_fraction"]})
    table = pd.DataFrame(rows, columns=list(CELL_COLUMNS))
    if len(table) and sort:
        table = table.sort_values(["model", "dataset", "method", "method_params", "settings", "max_frames",
                                   "max_context"], kind="stable").reset_index(drop=True)
    if len(table):
        table["failed_fraction"] = table["failed_fraction"].astype(float)
    return round_table(table)


# -- writing ---------------------------------------------------------------------------------

def _cell_text(v, decimals: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.{decimals}f}"
    return str(v)


def to_markdown(df: pd.DataFrame) -> str:
    """A pipe table: floats with 1 decimal (cost columns with theirs, :data:`COST_DECIMALS`),
    NaN empty, numeric columns right-aligned. pandas' ``to_markdown`` where ``tabulate`` is
    installed, else :func:`pipe_table`."""
    text = df.apply(lambda col: col.map(lambda v: _cell_text(v, COST_DECIMALS.get(col.name, 1)))) if len(df) \
        else df.astype(str)
    align = ["right" if pd.api.types.is_numeric_dtype(df[c]) else "left" for c in df.columns]
    if find_spec("tabulate") is not None:
        return text.to_markdown(index=False, disable_numparse=True, colalign=align)
    return pipe_table([str(c) for c in df.columns], text.values.tolist(), align)


def pipe_table(header: list[str], rows: list[list[str]], align: list[str]) -> str:
    """A GitHub-flavoured markdown table without tabulate."""
    widths = [max([len(h), 3, *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells):
        padded = (c.rjust(w) if a == "right" else c.ljust(w) for c, w, a in zip(cells, widths, align))
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if a == "right" else ":" + "-" * (w + 1) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def footer(runs: pd.DataFrame, runs_root) -> str:
    """The line under every generated table: how many cells were read (and skipped)."""
    text = f"{len(runs)} cells found under {runs_root}"
    skipped = runs.attrs.get("skipped", [])
    if skipped:
        text += f"; {len(skipped)} malformed metrics.json skipped: {', '.join(skipped)}"
    return text + "."


def _count_ours(table: pd.DataFrame) -> tuple[int, int]:
    cols = [c for c in table.columns if c.endswith("_ours") and not c.startswith(("avg_", "step_"))]
    return int(table[cols].notna().sum().sum()), int(table[[c[:-5] + "_paper" for c in cols]].notna().sum().sum())


def table_markdown(title: str, table: pd.DataFrame, foot: str) -> str:
    """``# title``, the table and the footer line."""
    return f"# {title}\n\n{to_markdown(table)}\n\n{foot}\n"


def grid_markdown(grid: pd.DataFrame, foot: str) -> str:
    """The ablation grid as one section per dataset, keeping the columns that dataset has."""
    parts = ["# Ablation grid: primary score per method and max_frames/max_context", ""]
    for dataset, sub in grid.groupby("dataset", sort=True) if len(grid) else []:
        sub = sub.drop(columns="dataset").dropna(axis=1, how="all").reset_index(drop=True)
        parts += [f"## {dataset}", "", to_markdown(sub), ""]
    if not len(grid):
        parts += ["(no cells)", ""]
    return "\n".join(parts + [foot, ""])


def write_tables(runs_root, paper_dir, out_dir) -> list[Path]:
    """Write ``table1..4.{md,csv}`` and ``ablation_grid.{md,csv}`` into ``out_dir`` from the
    cells under ``runs_root`` and the paper CSVs in ``paper_dir``; returns the paths written."""
    runs, out = collect(runs_root), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for n in TABLES:
        table = build_table(n, runs, load_paper(paper_dir, n))
        have, total = _count_ours(table)
        foot = f"{footer(runs, runs_root)} {have} of {total} paper numbers have a cell."
        written += _write(out / f"table{n}", table, table_markdown(TITLES[n], table, foot))
    grid = ablation_grid(runs)
    written += _write(out / "ablation_grid", grid, grid_markdown(grid, footer(runs, runs_root)))
    cells = cells_table(runs)
    written += _write(out / "cells", cells, table_markdown(CELLS_TITLE, cells, footer(runs, runs_root)))
    return written


def _write(stem: Path, df: pd.DataFrame, markdown: str) -> list[Path]:
    csv, md = stem.with_suffix(".csv"), stem.with_suffix(".md")
    df.to_csv(csv, index=False)  # (rounded by the table's builder)
    md.write_text(markdown)
    return [md, csv]


# -- plots ---------------------------------------------------------------------------------

from .plots import plot_accuracy  # noqa: E402,F401 - the plots read these tables' rows
