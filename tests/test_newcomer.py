"""The first minutes on a fresh clone: the bare Hydra entry runs, every "not found" message names
a command that exists, and an installed wheel (no checkout) finds its configs and runs a cell."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import sysconfig

import pytest

from retake.harness.datasets import DATASETS, DatasetNotFoundError, ensure_data, get_dataset, make_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1",
       "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false"}


def command_exists(command: str) -> bool:
    """``python scripts/X.py ...`` names a script of the checkout; ``python -m M ...`` a module."""
    words = command.split()
    assert words[0] == "python", command
    if words[1] == "-m":
        import importlib.util

        return importlib.util.find_spec(words[2]) is not None
    return os.path.isfile(os.path.join(ROOT, words[1]))


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_a_missing_benchmark_names_the_command_that_makes_it(tmp_path, name):
    """Every loader's "not found" error names a script or module that exists, with the data_root
    it was given; a folder that holds something else is never overwritten by a generated set."""
    root = tmp_path / name
    root.mkdir()
    (root / "unrelated.txt").write_text("not a benchmark")
    assert not ensure_data(get_dataset(name), str(root))
    with pytest.raises(DatasetNotFoundError) as e:
        get_dataset(name).load(str(root))
    message = str(e.value)
    command = re.search(r"`([^`]+)`", message).group(1)
    assert command == make_command(name, str(root)) and command_exists(command), message
    if name != "synthetic":  # (synthetic names the folder it writes under: the parent)
        assert str(root) in command
    assert name in message and "prepare_synthetic" not in message


def test_generated_benchmarks_are_written_on_first_use(tmp_path):
    """needle and synthetic are written where they are missing, loadable at once; a real
    benchmark never is."""
    for name in ("needle", "synthetic"):
        root = tmp_path / name
        assert ensure_data(get_dataset(name), str(root), log=lambda m: None)
        samples = get_dataset(name).load(str(root))
        assert samples and all(os.path.isfile(s.video) for s in samples)
        assert not ensure_data(get_dataset(name), str(root))  # there now
    assert not ensure_data(get_dataset("videomme"), str(tmp_path / "vm"))
    assert not os.path.exists(tmp_path / "vm")


def test_bare_hydra_entry_runs_on_a_fresh_clone(tmp_path):
    """`python -m retake.run` with no choices: the committed needle model on the needle set,
    written on first use; no traceback. (Paths moved to tmp_path and 4 samples, to stay quick.)"""
    runs, data = tmp_path / "runs", tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "retake.run", f"run.results_root={runs}", f"data_root={data}",
                        "run.limit=4", f"hydra.run.dir={tmp_path / 'hydra'}"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr + r.stdout
    # retake's lines go through logging: Hydra's console handler (stdout) and the job's log file
    assert f"[retake][INFO] - needle: no data under {data / 'needle'}; writing it now" in r.stdout
    (job_log,) = glob.glob(str(tmp_path / "hydra" / "*.log"))
    log = open(job_log).read()
    assert "needle: no data under" in log and "needle accuracy = " in log
    (metrics,) = glob.glob(str(runs / "needle_qwen2_5_vl__adaretake__needle__*" / "metrics.json"))
    result = json.load(open(metrics))
    assert result["metrics"]["num_samples"] == 4 and result["status"] == "done"


def test_hydra_entry_reports_a_missing_benchmark_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "retake.run", "dataset=videomme", f"data_root={tmp_path}",
                        f"run.results_root={tmp_path / 'runs'}", f"hydra.run.dir={tmp_path / 'hydra'}"],
                       cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr + r.stdout, r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]  # (Hydra's console handler writes to stdout)
    assert "[retake][ERROR] - error: videomme: neither videomme.json nor videomme.parquet found" in last
    assert "python scripts/prepare_videomme.py" in last and str(tmp_path / "videomme") in last


def test_an_installed_wheel_runs_a_cell_outside_the_checkout(tmp_path):
    """Build the wheel, install it (no dependencies: they come from this environment) into a
    fresh virtual environment, and run one cell from a folder outside the checkout: the configs
    are inside the package, the tiny model and the data are written on first use."""
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheels), ROOT], capture_output=True, text=True, env=ENV, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = glob.glob(str(wheels / "retake-*.whl"))
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "retake/conf/config.yaml" in names and "retake/conf/method/adaretake.yaml" in names
    assert "retake/checkpoints/needle_qwen2_5_vl/model.safetensors" in names  # the default model ships too
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (torch, transformers, lmms-eval, ...) from this environment; a .pth line
    # only adds the folder, so this environment's editable retake is not imported from it
    with open(os.path.join(site, "deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    # --target ignores what is installed (never uninstalls this environment's editable retake)
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                              "--target", site, wheel], capture_output=True, text=True, env=ENV, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    python = str(venv / "bin" / "python")
    where = subprocess.run([python, "-c", "import retake.run as r; print(r.__file__, r.CONFIG_PATH)"], cwd=work,
                           capture_output=True, text=True, env=ENV)
    assert where.returncode == 0, where.stderr
    module, conf = where.stdout.split()
    assert module.startswith(str(venv)) and conf.startswith(str(venv)), where.stdout
    needle = subprocess.run([python, "-c", "from retake.harness.schema import project_path; "
                             "print(project_path('checkpoints/needle_qwen2_5_vl'))"], cwd=work, capture_output=True, text=True, env=ENV)
    assert needle.stdout.strip().startswith(str(venv)) and os.path.isfile(os.path.join(needle.stdout.strip(), "config.json"))
    r = subprocess.run([python, "-m", "retake.run", "model=tiny_qwen2_vl", "dataset=synthetic", "method=snapkv",
                        "run.limit=2", "engine.max_context=320", "engine.chunk_frames=4", "sampling.max_long_side=56",
                        "engine.max_new_tokens=2"],
                       cwd=work, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "model tiny_qwen2_vl: no checkpoint at .cache/tiny_qwen2_vl; writing it now" in r.stdout
    assert os.path.isfile(work / ".cache" / "tiny_qwen2_vl" / "config.json")
    (metrics,) = glob.glob(str(work / "results" / "runs" / "tiny_qwen2_vl__snapkv__synthetic__*" / "metrics.json"))
    result = json.load(open(metrics))
    # (a budget of 320 leaves the tiny tokenizer's ~290-token prompts room for video: every sample answered)
    assert result["metrics"]["num_samples"] == 2 and result["failures"] == []
    import retake

    assert os.path.isfile(retake.__file__)  # this environment's own install is untouched
