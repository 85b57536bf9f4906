"""Faults a demanding user meets, each for real (issue 24): a predictions line cut between its
record and its newline or ending in garbage, write errors (a read-only folder or file, a full
disk at each write of a cell), two processes on one cell, a budget smaller than the text,
interrupts during start-up, odd annotation files and video paths, the needle model run from
another folder. Read-only and full filesystems are real mounts (a read-only bind mount, a
small tmpfs filled to a chosen number of free pages); those tests are skipped, saying why,
where the machine allows no mount (not root, no CAP_SYS_ADMIN)."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from retake.harness.files import CellBusy, CellLock, WriteError, write_atomic
from retake.harness.predictions import open_for_append, rank_files, read_predictions
from retake.harness.runner import cell_name, resolve_config, run_cell
from retake.harness.benchmarks.synthetic import write_synthetic_benchmark
from retake.run import guarded
from retake.tiny import write_tiny_model
from retake.video import write_test_video

pytestmark = pytest.mark.xdist_group("faults")

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
       "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
       "TOKENIZERS_PARALLELISM": "false"}
VOLATILE = ("vision_seconds", "prefill_seconds", "decode_seconds", "peak_memory_bytes", "peak_memory_kind",
            "input_seconds", "video_reused")
PAGE = 4096


def cell(tiny, data_root, results_root, **run) -> dict:
    """A cell small enough for 2 CPU cores (9 samples on 3 videos, 8 frames of 56 px)."""
    return {
        "model": {"name": "tiny_qwen2_vl", "pretrained": str(tiny), "dtype": "float32", "device": "cpu"},
        "method": {"name": "adaretake", "params": {}},
        "dataset": {"name": "synthetic", "data_root": str(data_root)},
        "sampling": {"fps": 2.0, "max_frames": 8, "max_long_side": 56, "backend": "decord"},
        "engine": {"max_context": 1024, "chunk_frames": 4, "max_new_tokens": 3},
        "run": {"results_root": str(results_root), **run},
    }


def cell_path(cfg: dict) -> Path:
    return Path(cfg["run"]["results_root"]) / cell_name(resolve_config(cfg))


def read_lines(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def stable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def temporaries(directory) -> list[str]:
    return [p for p in glob.glob(f"{directory}/**/*", recursive=True) if re.search(r"\.tmp\d+$", p)]


def exit_of(fn, *args) -> int:
    """The exit code ``retake.run.guarded`` ends the process with (it must end it)."""
    with pytest.raises(SystemExit) as e:
        guarded(fn, *args)
    return e.value.code


def error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    tiny = write_tiny_model("qwen2_vl", root / "tiny", seed=0)
    data = write_synthetic_benchmark(root / "odd", formats=("synthetic",), num_videos=3, questions_per_video=3,
                                     seed=1)["synthetic"]
    return {"root": root, "tiny": tiny, "data": data}


@pytest.fixture(scope="module")
def reference(bench):
    """An uninterrupted run of the cell: (config, its folder, predictions.jsonl records)."""
    cfg = cell(bench["tiny"], bench["data"], bench["root"] / "reference")
    run_cell(cfg)
    directory = cell_path(cfg)
    return cfg, directory, read_lines(directory / "predictions.jsonl")


def copy_of(reference, results_root: Path) -> tuple[dict, Path]:
    """The reference cell copied under ``results_root``, as a killed run leaves it: rank file
    and task folder, no predictions.jsonl, no metrics.json."""
    ref_cfg, ref_dir, _ = reference
    cfg = json.loads(json.dumps(ref_cfg))
    cfg["run"]["results_root"] = str(results_root)
    directory = cell_path(cfg)
    shutil.copytree(ref_dir, directory)
    for name in ("metrics.json", "predictions.jsonl", "cell.lock"):
        (directory / name).unlink(missing_ok=True)
    return cfg, directory


# -- mounts --------------------------------------------------------------------------------------

def _mount_or_skip(args: list[str], what: str) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip(f"{what} needs root and mount(8): not available here")
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot make {what} on this machine ({r.stderr.strip()}; needs CAP_SYS_ADMIN)")


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "8m"):
    path.mkdir(parents=True, exist_ok=True)
    _mount_or_skip(["-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], "a small tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` (a folder or a file) bind-mounted read-only onto itself: as root, chmod would
    not stop a write, a read-only mount does."""
    _mount_or_skip(["--bind", str(path), str(path)], "a read-only bind mount")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], check=True, capture_output=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(mount: Path, free_pages: int) -> None:
    """Fill the tmpfs at ``mount`` until exactly ``free_pages`` pages are free."""
    st = os.statvfs(mount)
    assert st.f_frsize == PAGE and st.f_bavail >= free_pages, (st.f_frsize, st.f_bavail, free_pages)
    fd = os.open(mount / "filler", os.O_CREAT | os.O_WRONLY)
    try:
        if st.f_bavail > free_pages:
            os.posix_fallocate(fd, 0, (st.f_bavail - free_pages) * PAGE)
    finally:
        os.close(fd)
    assert os.statvfs(mount).f_bavail == free_pages


def pages(*paths) -> int:
    """tmpfs pages the files (folders: every file under them) take."""
    files = []
    for p in map(Path, paths):
        files += [q for q in p.rglob("*") if q.is_file()] if p.is_dir() else [p] if p.exists() else []
    return sum(os.stat(f).st_blocks * 512 // PAGE for f in files)


# -- 1. a saved answer is never lost ------------------------------------------------------------

RECORD = {"task": "t", "doc_id": 0, "uid": "a", "prediction": "A", "error": None}


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path):
    """A flush cut between a record and its newline: the record counts as answered, and the
    next append adds the newline instead of cutting the answer away."""
    path = tmp_path / "p.rank0.jsonl"
    second = {**RECORD, "doc_id": 1, "uid": "b", "prediction": "B"}
    path.write_text(json.dumps(RECORD) + "\n" + json.dumps(second))  # no final newline
    assert set(read_predictions(str(tmp_path / "p"))) == {("t", 0, "a"), ("t", 1, "b")}
    with open_for_append(str(path)) as f:
        f.write(json.dumps({**RECORD, "doc_id": 2, "uid": "c"}) + "\n")
    assert [r["uid"] for r in read_lines(path)] == ["a", "b", "c"]
    assert not os.path.exists(f"{path}.corrupt")


def test_a_garbage_or_non_utf8_tail_is_set_aside(tmp_path, caplog):
    """A last line cut short with bytes that are not UTF-8: reading skips it (no
    UnicodeDecodeError), the next append moves it to <file>.corrupt with one warning naming
    the file, and every whole line before it stays."""
    path = tmp_path / "p.rank0.jsonl"
    tail = b'{"task": "t", "doc_id": 1, "uid": "caf\xe9 \xff\xfe'
    path.write_bytes((json.dumps(RECORD) + "\n").encode() + tail)
    assert set(read_predictions(str(tmp_path / "p"))) == {("t", 0, "a")}
    caplog.set_level(logging.WARNING, logger="retake")
    with open_for_append(str(path)) as f:
        f.write(json.dumps({**RECORD, "doc_id": 1, "uid": "b"}) + "\n")
    assert [r["uid"] for r in read_lines(path)] == ["a", "b"]
    assert (tmp_path / "p.rank0.jsonl.corrupt").read_bytes() == tail + b"\n"
    (warning,) = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert str(path) in warning and "not UTF-8" in warning and "\n" not in warning


def test_a_resume_keeps_an_unterminated_answer_and_sets_garbage_aside(bench, reference, tmp_path, caplog):
    """A killed cell: rank 0's file ends with a whole record without its newline, rank 1's (a
    former two-process run) with garbage that is not UTF-8. The resume in one process keeps
    both files' answers, answers only the one sample missing, and ends with the reference's
    predictions; the garbage is in rank 1's .corrupt file, named by a warning."""
    _, _, ref_records = reference
    cfg, directory = copy_of(reference, tmp_path / "runs")
    rank0 = directory / "predictions.rank0.jsonl"
    lines = rank0.read_bytes().splitlines(keepends=True)
    assert len(lines) == 9
    rank0.write_bytes(b"".join(lines[:7])[:-1])  # 7 answers, the last without its newline
    (directory / "predictions.rank1.jsonl").write_bytes(lines[7] + b"\xe9garbage\xff")
    caplog.set_level(logging.INFO, logger="retake")
    result = run_cell(cfg)
    assert result["status"] == "done" and result["metrics"]["num_samples"] == 9
    assert len(read_lines(rank0)) == 8  # 7 kept, 1 answered now; nothing answered twice
    assert stable(read_lines(directory / "predictions.jsonl")) == stable(ref_records)
    assert (directory / "predictions.rank1.jsonl.corrupt").read_bytes() == b"\xe9garbage\xff\n"
    assert any("predictions.rank1.jsonl" in r.getMessage() and "set aside" in r.getMessage() for r in caplog.records)


# -- 2. write errors: one line, exit code 74, nothing saved lost, no temporary left ---------------

def test_a_read_only_results_folder_fails_before_the_model_loads(bench, tmp_path, caplog):
    """results_root on a read-only mount: one line naming the cell folder and the cause, exit
    code 74, before the model loads (the checkpoint given does not even exist)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    cfg = cell("/nonexistent/checkpoint", bench["data"], runs)
    with read_only(runs):
        assert exit_of(run_cell, cfg) == 74
    (line,) = error_lines(caplog)
    assert line.startswith(f"error: cannot write {cell_path(cfg)}") and "Read-only file system" in line
    assert "\n" not in line and not any(runs.iterdir())


def test_a_read_only_cell_or_rank_file_changes_nothing(reference, tmp_path, caplog):
    """A killed cell whose folder, or only its rank file, is read-only: one line naming it,
    exit code 74, before the model loads; every byte saved is still there."""
    cfg, directory = copy_of(reference, tmp_path / "runs")
    rank0 = directory / "predictions.rank0.jsonl"
    rank0.write_bytes(b"".join(rank0.read_bytes().splitlines(keepends=True)[:5]))
    before = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    cfg["model"]["pretrained"] = "/nonexistent/checkpoint"
    with read_only(directory):
        assert exit_of(run_cell, cfg) == 74
    with read_only(rank0):
        assert exit_of(run_cell, cfg) == 74
    folder, rank = error_lines(caplog)
    assert folder.startswith(f"error: cannot write {directory}") and "Read-only file system" in folder
    assert rank.startswith(f"error: cannot write {rank0}") and "Read-only file system" in rank
    assert {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()} == before


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    with tmpfs(tmp_path / "fs", size="64k") as fs:
        write_atomic(str(fs / "config.yaml"), "old: 1\n")
        fill(fs, 0)
        with pytest.raises(WriteError, match=r"cannot write .*config\.yaml: No space left on device \[errno ENOSPC\]"):
            write_atomic(str(fs / "config.yaml"), "new: 2\n" * 1000)
        assert (fs / "config.yaml").read_text() == "old: 1\n" and sorted(os.listdir(fs)) == ["config.yaml", "filler"]


@pytest.fixture(scope="module")
def full_disk(bench, reference, tmp_path_factory):
    """The reference cell run on a tmpfs, and the pages each of its writes takes there (the
    same mount path length, so the same file sizes, in every case below)."""
    root = tmp_path_factory.mktemp("full")
    with tmpfs(root / "fsR") as fs:
        cfg = cell(bench["tiny"], bench["data"], fs / "runs")
        run_cell(cfg)
        d = cell_path(cfg)
        task = [d / "task" / n for n in ("samples.jsonl", "utils.py", "retake_synthetic.yaml")]
        need = {"lock": pages(d / "cell.lock"), "config": pages(d / "config.yaml"), "task": pages(*task),
                "cache": pages(d / "task" / "hf_datasets_cache"), "rank": pages(d / "predictions.rank0.jsonl")}
        rank0 = (d / "predictions.rank0.jsonl").read_bytes()
    assert need["rank"] >= 2 and need["lock"] <= 1 and all(need[k] for k in ("config", "task", "cache")), need
    return {"root": root, "need": need, "rank0": rank0}


# the write that fails, the free pages when the run starts, the file the error names
FULL_AT = {
    "start": (lambda n: 0, ""),
    "task folder": (lambda n: n["lock"] + n["config"], "task/samples.jsonl"),
    "datasets cache": (lambda n: n["lock"] + n["config"] + n["task"], "task/hf_datasets_cache"),
    "rank file": (lambda n: n["lock"] + n["config"] + n["task"] + n["cache"] + 1, "predictions.rank0.jsonl"),
    "predictions.jsonl": (lambda n: n["lock"] + n["config"] + n["task"] + n["cache"], "predictions.jsonl"),
}


@pytest.mark.parametrize("where", list(FULL_AT))
def test_a_full_disk_at_each_write_is_one_line_and_resumes(bench, reference, full_disk, where, caplog):
    """The cell's folder on a tmpfs left with just enough free pages for the writes before
    ``where``: one line naming the file and "No space left on device" (datasets: "disk
    space"), exit code 74, no temporary file, every line of the rank file whole (a line the
    disk could not take is cut back, never left half); with room again the same command
    finishes the cell with the reference's predictions, each sample answered once."""
    free, target = FULL_AT[where]
    _, _, ref_records = reference
    with tmpfs(full_disk["root"] / f"fs{list(FULL_AT).index(where)}") as fs:
        cfg = cell(bench["tiny"], bench["data"], fs / "runs")
        directory = cell_path(cfg)
        if where == "start":
            cfg["model"]["pretrained"] = "/nonexistent/checkpoint"  # the check comes before the model
        if where == "predictions.jsonl":  # every answer saved before: only the merged file is left to write
            directory.mkdir(parents=True)
            (directory / "predictions.rank0.jsonl").write_bytes(full_disk["rank0"])
        fill(fs, free(full_disk["need"]))
        assert exit_of(run_cell, cfg) == 74
        (line,) = error_lines(caplog)
        assert line.startswith(f"error: cannot write {directory / target}".rstrip("/")), line
        assert ("disk space" if where == "datasets cache" else "No space left on device") in line and "\n" not in line
        assert temporaries(directory) == [] and not (directory / "metrics.json").exists()
        rank0 = directory / "predictions.rank0.jsonl"
        if where == "rank file":
            saved = rank0.read_bytes()
            assert saved.endswith(b"\n") and 1 <= len(read_lines(rank0)) < 9, saved[-200:]
        if where == "predictions.jsonl":
            assert rank0.read_bytes() == full_disk["rank0"]
        if where == "start":
            return
        os.remove(fs / "filler")
        assert run_cell(cfg)["status"] == "done"
        assert len(read_lines(rank0)) == 9 and temporaries(directory) == []
        assert stable(read_lines(directory / "predictions.jsonl")) == stable(ref_records)


# -- 3. one process per cell ------------------------------------------------------------------------

HOLD = ("import sys; from retake.harness.files import CellLock; lock = CellLock(sys.argv[1]); lock.acquire(); "
        "print('locked', flush=True); sys.stdin.read()")


@contextlib.contextmanager
def holder(directory: Path):
    """Another process holding the cell's lock (until killed, or its stdin closes)."""
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()


class OnWaiting(logging.Handler):
    """Runs ``action`` when the runner says it waits for the lock (just before it blocks)."""

    def __init__(self, action):
        super().__init__()
        self.action, self.seen = action, []

    def emit(self, record):
        if "waiting for it to finish" in record.getMessage():
            self.seen.append(record.getMessage())
            self.action()


@contextlib.contextmanager
def on_waiting(action):
    handler = OnWaiting(action)
    logging.getLogger("retake").addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger("retake").removeHandler(handler)


def test_a_second_process_on_a_cell_says_who_holds_it_and_exits_or_waits(bench, reference, tmp_path, caplog):
    """Another process holds the cell: with run.on_busy=exit the run stops at once (exit code
    75, one line naming the holder's pid), writing nothing; by default it says who holds the
    cell and waits. The lock is the operating system's: when its holder is killed -9 the
    waiting run takes it at once (the lock file left behind is no stale marker) and answers
    every sample once."""
    _, _, ref_records = reference
    cfg = cell(bench["tiny"], bench["data"], tmp_path / "runs", on_busy="exit")
    directory = cell_path(cfg)
    with holder(directory) as proc:
        assert exit_of(run_cell, cfg) == 75
        (line,) = error_lines(caplog)
        assert f"pid {proc.pid}" in line and str(directory) in line and "run.on_busy=wait" in line
        assert sorted(os.listdir(directory)) == ["cell.lock"]
        cfg["run"]["on_busy"] = "wait"

        def kill_holder():
            proc.kill()
            proc.wait()

        with on_waiting(kill_holder) as waited:
            result = run_cell(cfg)
    assert len(waited.seen) == 1 and f"pid {proc.pid}" in waited.seen[0]
    assert result["status"] == "done" and len(read_lines(directory / "predictions.rank0.jsonl")) == 9
    assert stable(read_lines(directory / "predictions.jsonl")) == stable(ref_records)


def test_a_run_that_waited_skips_the_cell_the_other_finished(bench, reference, tmp_path):
    """Two runs of one cell started together: the second waits for the first and then finds
    the cell done: it answers nothing."""
    _, ref_dir, _ = reference
    cfg = cell(bench["tiny"], bench["data"], tmp_path / "runs")
    directory = cell_path(cfg)
    with holder(directory) as proc:
        def first_finishes():
            shutil.copy(ref_dir / "metrics.json", directory / "metrics.json")
            proc.kill()
            proc.wait()

        with on_waiting(first_finishes) as waited:
            result = run_cell(cfg)
    assert waited.seen and result == json.loads((ref_dir / "metrics.json").read_text())
    assert rank_files(str(directory / "predictions")) == []


def test_a_lock_is_released_when_its_holder_ends(tmp_path):
    lock = CellLock(str(tmp_path))
    assert not lock.acquire(wait=False)
    with pytest.raises(CellBusy, match=f"pid {os.getpid()}"):
        CellLock(str(tmp_path)).acquire(wait=False)
    lock.release()
    again = CellLock(str(tmp_path))
    assert not again.acquire(wait=False)
    again.release()


# -- 4. a budget smaller than the text: one line before the weights load -------------------------------

def test_an_impossible_budget_fails_before_the_weights_load(bench, tmp_path, caplog):
    """engine.max_context=10 on a ~100-token prompt: one line naming engine.max_context, the
    text's length and the smallest valid value, exit code 2. The checkpoint's weights are
    garbage here, so the check cannot have loaded them."""
    model = tmp_path / "model"
    shutil.copytree(bench["tiny"], model)
    (model / "model.safetensors").write_bytes(b"not weights" * 100)
    cfg = cell(model, bench["data"], tmp_path / "runs")
    cfg["engine"]["max_context"] = 10
    assert exit_of(run_cell, cfg) == 2
    (line,) = error_lines(caplog)
    m = re.search(r"engine\.max_context=10 is smaller than the text of every sample: the shortest prompt is (\d+) "
                  r"tokens .* the smallest valid engine\.max_context is (\d+)", line)
    assert m and int(m.group(2)) == int(m.group(1)) + 1, line
    assert not (cell_path(cfg) / "config.yaml").exists()


@pytest.mark.parametrize("mode", ["aware", "unknown"])
def test_the_smallest_valid_budget_is_the_engines(bench, mode):
    """The value the check names is exactly where the engine starts to accept a sample."""
    from retake.engine import EngineConfig
    from retake.harness.datasets import get_dataset
    from retake.harness.preflight import budget_problem, text_counter, weightless_adapter
    from retake.harness.samples import format_prompt
    from retake.methods import get_method
    from retake.models import load_adapter
    from retake.pipeline import SamplingConfig, answer_question

    sample = get_dataset("synthetic").load(bench["data"])[0]
    count = text_counter(weightless_adapter(str(bench["tiny"])))
    error, _ = budget_problem(1, [sample], count, mode, question_tokens=20)
    smallest = int(re.search(r"the smallest valid engine\.max_context is (\d+)", error).group(1))
    adapter = load_adapter(str(bench["tiny"]), dtype="float32", device="cpu")
    sampling = SamplingConfig(fps=2.0, max_frames=8, max_long_side=56, backend="decord")

    def answer(budget):
        engine = EngineConfig(max_context=budget, chunk_frames=4, max_new_tokens=1, question_mode=mode,
                              question_tokens=20)
        return answer_question(adapter, sample.video, format_prompt(sample), get_method("adaretake"), sampling, engine)

    assert answer(smallest)["answer"] is not None
    with pytest.raises(ValueError, match="leaves no room for video"):
        answer(smallest - 1)
    assert budget_problem(smallest, [sample], count, mode, question_tokens=20) == (None, None)


def test_a_budget_too_small_for_some_samples_warns(bench):
    from retake.harness.datasets import get_dataset
    from retake.harness.preflight import budget_problem, text_counter, weightless_adapter

    samples = get_dataset("synthetic").load(bench["data"])[:2]
    samples[1].question = "Why? " * 200
    count = text_counter(weightless_adapter(str(bench["tiny"])))
    error, warning = budget_problem(400, samples, count)
    assert error is None and warning.startswith("1 of 2 samples have a text longer than engine.max_context=400")
    assert f"uid {samples[1].uid}" in warning


# -- 5. interrupts during start-up -----------------------------------------------------------------

@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("entry", ["run", "runner", "cli"])
def test_an_interrupt_during_start_up_is_one_line(bench, tmp_path, entry, sig, code):
    """Ctrl-C / SIGTERM while the entry point still imports its libraries (sent once
    ``-X importtime`` says hydra, yaml (omegaconf's first) or torch is imported): one line, exit
    code 130 / 143, no traceback."""
    if entry == "runner":
        config = tmp_path / "cell.yaml"
        config.write_text(json.dumps(cell(bench["tiny"], bench["data"], tmp_path / "runs")))
        args = ["-m", "retake.harness.runner", "--config", str(config)]
        after = "yaml"
    elif entry == "run":
        args = ["-m", "retake.run", "model=tiny_qwen2_vl", f"model.pretrained={bench['tiny']}", "dataset=synthetic",
                f"data_root={Path(bench['data']).parent}", f"run.results_root={tmp_path / 'runs'}",
                f"hydra.run.dir={tmp_path / 'hydra'}", "model.device=cpu"]
        after = "hydra"
    else:  # (a real video and model: the command would run for seconds more)
        video = write_test_video(tmp_path / "v.mp4", num_frames=16, size=(56, 84), fps=8)
        args = ["-m", "retake.cli", "ask", str(video), "q", "--model", str(bench["tiny"]), "--max-long-side", "56"]
        after = "torch"
    proc = subprocess.Popen([sys.executable, "-X", "importtime", *args], env=ENV, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if re.search(rf"\|\s+{after}$", line.rstrip()):  # (indented when imported by another module)
            break
    assert proc.poll() is None, "".join(seen)[-3000:]
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    text = out + "".join(seen) + err
    assert proc.returncode == code, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    said = [line for line in text.splitlines() if "interrupted" in line and not line.startswith("import time:")]
    assert len(said) == 1, said


# -- 6. annotation files and video paths: messages that name the file and the problem --------------

VIDEOMME_ROW = {"video_id": "001", "duration": "short", "domain": "d", "sub_category": "s", "videoID": "v1",
                "question_id": "001-1", "task_type": "t", "question": "Why?",
                "options": ["A. x", "B. y", "C. z", "D. w"], "answer": "B"}


def test_annotation_errors_name_the_file_and_the_row(tmp_path):
    from retake.harness.datasets import get_dataset

    root = tmp_path / "vm"
    root.mkdir()
    path = root / "videomme.json"
    load = lambda: get_dataset("videomme").load(str(root))  # noqa: E731
    # not UTF-8 (saved as Latin-1): the file, the line and the byte
    path.write_bytes(json.dumps([VIDEOMME_ROW], indent=1).replace("Why?", "Pourquoi l'\u00e9t\u00e9?").encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:\d+: not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        load()
    # a question id used twice
    path.write_text(json.dumps([VIDEOMME_ROW, {**VIDEOMME_ROW, "question_id": "001-2"}, VIDEOMME_ROW]))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} row 2: question id '001-1' is used twice "
                                         rf"\(first at {re.escape(str(path))} row 0\)"):
        load()
    # no options
    path.write_text(json.dumps([{**VIDEOMME_ROW, "options": [], "answer": "D"}]))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))} row 0 question_id 001-1: 0 options \(\[\]\); "
                                         r"a question needs 2\.\.10"):
        load()
    # the same in the other formats' files
    lvb = tmp_path / "lvbench"
    lvb.mkdir()
    good = {"key": "k", "type": "t", "qa": [{"uid": 1, "question": "Q?\n(A) x\n(B) y", "answer": "A"}]}
    (lvb / "video_info.meta.jsonl").write_bytes((json.dumps(good) + "\n").encode() + b'{"key": "\xe9"}\n')
    with pytest.raises(ValueError, match=r"video_info\.meta\.jsonl:2: not UTF-8 text \(byte 0xe9"):
        get_dataset("lvbench").load(str(lvb))
    (lvb / "video_info.meta.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "key": "k2"}) + "\n")
    with pytest.raises(ValueError, match=r"line 2 uid 1: question id '1' is used twice \(first at .* line 1 uid 1\)"):
        get_dataset("lvbench").load(str(lvb))


def test_a_duplicate_question_id_stops_the_cell_before_the_model_loads(bench, tmp_path, caplog):
    data = tmp_path / "synthetic"
    shutil.copytree(bench["data"], data)
    lines = (data / "samples.jsonl").read_text().splitlines(keepends=True)
    (data / "samples.jsonl").write_text("".join(lines + lines[:1]))
    cfg = cell("/nonexistent/checkpoint", data, tmp_path / "runs")
    assert exit_of(run_cell, cfg) == 2
    (line,) = error_lines(caplog)
    uid = json.loads(lines[0])["uid"]
    assert f"samples.jsonl line {len(lines) + 1}: question id {uid!r} is used twice" in line
    assert "(first at" in line and "line 1)" in line


def test_video_paths_that_cannot_be_read_say_why(tmp_path):
    from retake.video import VideoDecodeError, check_video_file, probe_video

    (tmp_path / "a.mp4").symlink_to(tmp_path / "b.mp4")
    (tmp_path / "b.mp4").symlink_to(tmp_path / "a.mp4")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    (tmp_path / "text.mp4").write_text("not a video\n" * 20)
    cases = {
        str(tmp_path / "a.mp4"): "a symlink loop",
        str(tmp_path / "dangling.mp4"): f"a broken symlink (to '{tmp_path / 'gone.mp4'}'",
        "https://example.org/clip.mp4": "URLs are not read; download the file first",
        str(tmp_path / "missing.mp4"): "file not found",
    }
    for path, cause in cases.items():
        with pytest.raises(VideoDecodeError) as e:
            check_video_file(path)
        assert cause in e.value.cause and path in str(e.value), (path, str(e.value))
    check_video_file(tmp_path / "text.mp4")  # a file there; what it holds is the probe's question
    for backend in ("pyav", "decord"):
        with pytest.raises(VideoDecodeError, match="undecodable"):
            probe_video(tmp_path / "text.mp4", backend)


def test_ask_checks_the_video_before_the_model_loads(tmp_path, capsys):
    """`retake ask` with a URL or a file that is no video: one line about the video, exit code
    2, though the model path does not exist either (so it was never reached)."""
    from retake.cli import main

    (tmp_path / "text.mp4").write_text("not a video\n" * 20)
    for video, cause in (("https://example.org/clip.mp4", "URLs are not read"),
                         (str(tmp_path / "text.mp4"), "undecodable")):
        assert main(["ask", video, "q", "--model", "/nonexistent/checkpoint"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("retake ask: error: cannot read video") and cause in err


def test_an_unreadable_file_of_a_cell_is_named(reference, tmp_path, caplog):
    """A cell's config.yaml or metrics.json holding garbage: one line naming the file and the
    way out, exit code 2 (not a YAML / JSON traceback)."""
    cfg, directory = copy_of(reference, tmp_path / "runs")
    (directory / "metrics.json").write_bytes(b"\xe9{not json")
    assert exit_of(run_cell, cfg) == 2
    (directory / "config.yaml").write_bytes(b"model: [unclosed\n\xff")
    assert exit_of(run_cell, cfg) == 2
    metrics, config = error_lines(caplog)
    assert metrics.startswith(f"error: {directory / 'metrics.json'}: unreadable") and "run.overwrite=true" in metrics
    assert config.startswith(f"error: {directory / 'config.yaml'}: unreadable") and "\n" not in config


# -- 7. the committed needle model from any working directory -------------------------------------------

def test_the_needle_model_is_found_from_any_directory(tmp_path, monkeypatch):
    """`model=needle_qwen2_5_vl` run from another folder names the checkout's checkpoint, an
    absolute path (never one relative to the working directory, which then went to the hub)."""
    from retake.harness.preflight import weightless_adapter
    from retake.harness.schema import compose
    from retake.models import check_checkpoint

    monkeypatch.chdir(tmp_path)
    cfg = resolve_config(compose(["model=needle_qwen2_5_vl", f"data_root={tmp_path}"]))
    assert cfg.model.pretrained == str(ROOT / "checkpoints" / "needle_qwen2_5_vl")
    check_checkpoint(cfg.model.pretrained)
    assert weightless_adapter(cfg.model.pretrained).num_layers == 4


def test_project_paths_in_a_checkout_and_in_an_installed_package(tmp_path):
    from retake.harness.schema import project_path

    checkout = tmp_path / "checkout"
    (checkout / "src" / "retake").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("[project]\n")
    assert project_path("checkpoints/m", str(checkout / "src" / "retake")) == str(checkout / "checkpoints" / "m")
    site = tmp_path / "lib" / "site-packages" / "retake"
    site.mkdir(parents=True)
    assert project_path("checkpoints/m", str(site)) == str(site / "checkpoints" / "m")
