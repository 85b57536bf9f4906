"""The evaluation core: the lmms-eval model ``retake``, the task files and ``run_cell``, run
end to end through lmms-eval's own evaluator on a tiny random model and tiny benchmarks in
every official layout (real videos, real loaders, real scoring; nothing on the model path is
replaced). A random model's answers are arbitrary text, so the checks are about counting:
metrics.json must equal what the test recomputes from predictions.jsonl by itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from retake.harness import tasks
from retake.harness.datasets import get_dataset
from retake.harness.lmms_model import (
    RetakeLMM,
    manifests,
    model_args_string,
    open_for_append,
    parse_model_args,
    rank_files,
    read_predictions,
    video_of,
)
from retake.harness.runner import cell_name, model_args, resolve_config, run_cell
from retake.harness.samples import Sample, format_prompt, parse_answer
from retake.harness.benchmarks.synthetic import write_synthetic_benchmark
from retake.tiny import write_tiny_model

# one group: under `pytest -n 2 --dist loadgroup` the module's fixtures are built once
pytestmark = pytest.mark.xdist_group("harness")

FORMATS = ("videomme", "mlvu_dev", "longvideobench_val", "lvbench")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
       "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
       "TOKENIZERS_PARALLELISM": "false"}
# measured per run, so never equal between two runs
VOLATILE = ("vision_seconds", "prefill_seconds", "decode_seconds", "peak_memory_bytes", "peak_memory_kind",
            "input_seconds", "video_reused")  # (which question of a video comes first depends on the shard)


def cell(tiny: str, dataset: str, data_root: str, results_root, **engine) -> dict:
    """A cell config small enough for 2 CPU cores: 8 frames of 56 px, chunks of 4, 3 new tokens."""
    return {
        "model": {"name": "tiny_qwen2_vl", "pretrained": tiny, "dtype": "float32", "attn_implementation": "sdpa",
                  "rope_scaling_factor": None, "device": "cpu"},
        "method": {"name": "adaretake", "params": {}},
        "dataset": {"name": dataset, "data_root": data_root},
        "sampling": {"fps": 2.0, "max_frames": 8, "max_long_side": 56, "backend": "decord"},
        "engine": {"max_context": 1024, "chunk_frames": 4, "max_new_tokens": 3, "max_guide_tokens": None,
                   "reforge_positions": False, **engine},
        "run": {"results_root": str(results_root), "limit": None, "overwrite": False},
    }


def cell_path(cfg: dict) -> str:
    return os.path.join(cfg["run"]["results_root"], cell_name(resolve_config(cfg)))


def read_lines(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def stable(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records]


def count_lines(path) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return f.read().count("\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_yaml(cfg: dict, path) -> str:
    OmegaConf.save(OmegaConf.create(cfg), path)
    return str(path)


def runner_cmd(config: str) -> list[str]:
    return [sys.executable, "-m", "retake.harness.runner", "--config", config]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("harness")
    tiny = write_tiny_model("qwen2_vl", root / "tiny", seed=0)
    data = write_synthetic_benchmark(root / "data", formats=FORMATS + ("synthetic",))
    broken = write_synthetic_benchmark(root / "broken", formats=("synthetic",), broken=("missing", "corrupt"))
    odd = write_synthetic_benchmark(root / "odd", formats=("synthetic",), num_videos=3, questions_per_video=3, seed=1)
    return {"root": root, "tiny": tiny, "data": data, "broken": broken["synthetic"], "odd": odd["synthetic"]}


@pytest.fixture(scope="module")
def runs(bench):
    """One uninterrupted single-process cell per benchmark format."""
    out = {}
    for fmt in FORMATS:
        cfg = cell(bench["tiny"], fmt, bench["data"][fmt], bench["root"] / "runs")
        out[fmt] = (cfg, run_cell(cfg))
    return out


@pytest.fixture(scope="module")
def reference(bench):
    """The uninterrupted single-process run the sharded and the resumed runs must reproduce
    (9 samples: an odd count, so lmms-eval pads one rank)."""
    cfg = cell(bench["tiny"], "synthetic", bench["odd"], bench["root"] / "reference")
    run_cell(cfg)
    return cfg, read_lines(os.path.join(cell_path(cfg), "predictions.jsonl"))


# -- the lmms-eval model ---------------------------------------------------------------------

def test_entry_point_resolves():
    """`lmms-eval --model retake` resolves through the entry-point group lmms_eval.models."""
    from lmms_eval.models import get_model, get_model_manifest, list_available_models

    assert "retake" in list_available_models()
    assert get_model_manifest("retake") == manifests()[0]
    assert get_model("retake") is RetakeLMM and RetakeLMM.is_simple


def test_model_args_from_command_line_strings():
    from lmms_eval.utils import simple_parse_args_string

    typed = parse_model_args({"pretrained": "/m", "max_context": "1024", "rope_scaling_factor": "none",
                              "method_args": '{"layer_allocation": "even", "r_min": 0.01}', "reforge_positions": "true",
                              "fps": 1, "batch_size": 1})
    assert typed.engine.max_context == 1024 and typed.model.rope_scaling_factor is None
    assert typed.engine.reforge_positions is True
    assert typed.method_args == {"layer_allocation": "even", "r_min": 0.01} and typed.sampling.fps == 1.0
    # what the runner would pass on a command line reads back to the same values, through
    # lmms-eval's own parsing of --model_args (what RetakeLMM.create_from_arg_string runs)
    again = parse_model_args(simple_parse_args_string(model_args_string(typed)))
    assert again == typed
    with pytest.raises(ValueError, match="unknown model_args.*max_contxt.*valid: method.*max_context"):
        parse_model_args({"pretrained": "/m", "max_contxt": 1})
    with pytest.raises(ValueError, match="max_context"):
        parse_model_args({"pretrained": "/m", "max_context": "lots"})
    with pytest.raises(ValueError, match="question_mode.*valid: aware, unknown"):
        parse_model_args({"pretrained": "/m", "question_mode": "blind"})
    with pytest.raises(ValueError, match="valid choices"):  # before any model is loaded
        RetakeLMM(pretrained="/nonexistent", method="magic")


def test_device_map_reaches_the_loader(bench, monkeypatch):
    """A model config's device_map (the 72B config: "auto") goes through the runner's model
    args and lmms-eval's string form into load_adapter, which dispatches the model with it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lmms_eval.utils import simple_parse_args_string

    from retake.harness.schema import register

    register()
    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=conf):
            big = compose("config", overrides=["model=qwen2_5_vl_72b", "data_root=/d"])
            small = compose("config", overrides=["model=qwen2_5_vl_7b", "data_root=/d"])
    finally:
        GlobalHydra.instance().clear()
    assert model_args(resolve_config(big), None, "/p").model.device_map == "auto"
    assert model_args(resolve_config(small), None, "/p").model.device_map is None
    layer_map = {"model.visual": "cpu", "model.language_model": "cpu", "lm_head": "cpu"}
    args = parse_model_args({"pretrained": bench["tiny"], "device": "cpu", "device_map": json.dumps(layer_map)})
    assert parse_model_args(simple_parse_args_string(model_args_string(args))).model.device_map == layer_map
    import retake.models as models

    seen, real = [], models.load_adapter
    monkeypatch.setattr(models, "load_adapter", lambda *a, **kw: seen.append(kw) or real(*a, **kw))  # a spy
    lm = RetakeLMM.create_from_arg_string(model_args_string(args))
    assert seen[0]["device_map"] == layer_map and lm.adapter.device.type == "cpu"


def test_unsupported_request_types_say_so(bench):
    lm = RetakeLMM(pretrained=bench["tiny"], dtype="float32", device="cpu")
    with pytest.raises(NotImplementedError, match="generate_until"):
        lm.loglikelihood([])
    with pytest.raises(NotImplementedError, match="single-turn"):
        lm.generate_until_multi_round([])
    lm.clean()  # lmms-eval's clean() deletes nn.Module attributes; ours keeps the model
    assert lm.adapter.model is not None and str(lm.device) == "cpu"


def test_a_task_that_exits_on_a_missing_video_only_fails_that_sample():
    """lmms-eval's VideoMME / MLVU doc_to_visual call sys.exit on a missing file."""
    def exits(doc):
        sys.exit(-1)

    with pytest.raises(FileNotFoundError, match="sys.exit"):
        video_of(exits, {})
    with pytest.raises(TypeError, match="video file path"):
        video_of(lambda doc: [object()], {})
    assert video_of(lambda doc: ["/v.mp4", "/other.mp4"], {}) == "/v.mp4"


def test_predictions_files_survive_a_kill(tmp_path):
    """A line cut by a kill is dropped before appending; every rank's file is read; first line wins."""
    prefix = str(tmp_path / "p")
    with open(prefix + ".rank0.jsonl", "w") as f:
        f.write(json.dumps({"task": "t", "doc_id": 0, "uid": "a", "prediction": "A", "error": None}) + "\n")
        f.write('{"task": "t", "doc_id": 1, "uid": "b", "predic')  # killed mid-write
    with open(prefix + ".rank10.jsonl", "w") as f:
        f.write(json.dumps({"task": "t", "doc_id": 0, "uid": "a", "prediction": "late", "error": None}) + "\n")
    with open(prefix + ".rank2.jsonl", "w") as f:
        f.write(json.dumps({"task": "t", "doc_id": 2, "uid": None, "prediction": "", "error": "boom"}) + "\n")
    assert [os.path.basename(p) for p in rank_files(prefix)] == ["p.rank0.jsonl", "p.rank2.jsonl", "p.rank10.jsonl"]
    done = read_predictions(prefix)
    assert set(done) == {("t", 0, "a"), ("t", 2, None)} and done[("t", 0, "a")]["prediction"] == "A"
    with open_for_append(prefix + ".rank0.jsonl") as f:
        f.write(json.dumps({"task": "t", "doc_id": 1, "uid": "b", "prediction": "B", "error": None}) + "\n")
    lines = read_lines(prefix + ".rank0.jsonl")  # every line is whole again
    assert [r["uid"] for r in lines] == ["a", "b"]


# -- task files --------------------------------------------------------------------------------

def test_task_files_load_in_lmms_eval(tmp_path):
    """write_task's folder loads with lmms-eval's TaskManager; its functions give our prompt, an
    unchecked video path, parse_answer's letter and the dataset's score() of known answers."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    samples = [Sample(f"q{i}", str(tmp_path / "missing.mp4"), f"Question {i}?", ["x", "y", "z", "w"], "ABCD"[i % 4],
                      meta={"question_type": "motion" if i < 4 else "colour"}) for i in range(8)]
    name = tasks.write_task("synthetic", samples, tmp_path / "task", limit=6)
    assert name == "retake_synthetic" and len(tasks.read_task_samples(tmp_path / "task")) == 6
    manager = TaskManager("WARNING", include_path=[str(tmp_path / "task")], include_defaults=False)
    assert manager.all_tasks == [name]
    task = get_task_dict([name], manager)[name]
    docs = list(task.test_docs())
    assert [d["uid"] for d in docs] == [s.uid for s in samples[:6]]
    assert task.doc_to_text(docs[1]) == format_prompt(samples[1])
    assert task.doc_to_visual(docs[0]) == [str(tmp_path / "missing.mp4")]  # no existence check, no sys.exit
    # known answers: q0, q1 right; q2 wrong; q3 unparsable; q4 right ("The answer is A"); q5 empty (a failure)
    replies = ["A", "B. y", "A", "I think so", "The answer is A", ""]
    records = [task.process_results(d, [r])[tasks.metric_name("synthetic")] for d, r in zip(docs, replies)]
    assert [r["parsed"] for r in records] == ["A", "B", "A", None, "A", None]
    aggregate = task.aggregation()[tasks.metric_name("synthetic")]
    assert aggregate(records) == pytest.approx(100 * 3 / 6)
    assert get_dataset("synthetic").score(records)["num_unparsable"] == 2


# -- end to end through simple_evaluate -----------------------------------------------------------

def recount(records: list[dict], samples: dict[str, Sample], dataset: str) -> dict:
    """The headline counts, computed here from predictions.jsonl without the scoring module."""
    correct = [r["error"] is None and r["parsed"] is not None and r["parsed"] == samples[r["uid"]].answer
               for r in records]
    out = {
        "num_samples": len(records),
        "num_correct": sum(correct),
        "num_failed": sum(r["error"] is not None for r in records),
        "num_unparsable": sum(r["error"] is None and r["parsed"] is None for r in records),
        "accuracy": 100.0 * sum(correct) / len(records),
    }
    if dataset == "mlvu_dev":
        by_type: dict[str, list[bool]] = {}
        for r, ok in zip(records, correct):
            by_type.setdefault(samples[r["uid"]].meta["question_type"], []).append(ok)
        out["m_avg"] = sum(100.0 * sum(v) / len(v) for v in by_type.values()) / len(by_type)
    return out


@pytest.mark.parametrize("fmt", FORMATS)
def test_end_to_end_every_benchmark_format(runs, bench, fmt):
    cfg, result = runs[fmt]
    directory = cell_path(cfg)
    spec = get_dataset(fmt)
    samples = {s.uid: s for s in spec.load(bench["data"][fmt])}
    records = read_lines(os.path.join(directory, "predictions.jsonl"))
    assert [r["uid"] for r in records] == sorted(samples)  # one line per sample, sorted
    for r in records:
        s = samples[r["uid"]]
        assert r["answer"] == s.answer and r["meta"] == s.meta and r["error"] is None
        assert isinstance(r["prediction"], str) and r["parsed"] == parse_answer(r["prediction"], s.letters, s.options)
        assert r["frames"] == 8 and r["generated_tokens"] <= 3 and r["kv_tokens_mean"] > 0
    with open(os.path.join(directory, "metrics.json")) as f:
        stored = json.load(f)
    assert stored == result
    expected = recount(records, samples, fmt)
    assert {k: stored["metrics"][k] for k in expected} == pytest.approx(expected)
    assert stored["metrics"] == spec.score(records)  # the scoring the tables use, on the file
    assert stored["primary"] == spec.primary and stored["failures"] == [] and stored["num_processes"] == 1
    assert stored["lmms_eval"]["agrees"] and stored["lmms_eval"]["task"] == f"retake_{fmt}"
    assert stored["cell"] == {"model": "tiny_qwen2_vl", "method": "adaretake", "dataset": fmt, "max_context": 1024,
                              "max_frames": 8, "reforge_positions": False, "rope_scaling_factor": None, "fps": 2.0, "question_mode": "aware",
                              "protocol": "authors", "method_params": {"temporal_allocation": True, "layer_allocation": "adaptive",
                                                "r_min": 0.001, "w_min": 1.0},
                              "settings": {"engine.chunk_frames": 4, "engine.max_new_tokens": 3,
                                           "sampling.backend": "decord", "sampling.max_long_side": 56},
                              "limit": None}
    assert set(stored["versions"]) == {"retake", "torch", "transformers", "lmms_eval"}
    # the efficiency block, recomputed from the prediction lines; chance from the options
    eff = stored["efficiency"]
    mean = lambda key: sum(r[key] for r in records) / len(records)  # noqa: E731
    assert eff["num_samples"] == len(records)
    for r in records:
        assert r["achieved_keep_ratio"] == pytest.approx(r["kept_video_tokens_mean"] / r["full_video_tokens"])
        assert r["kv_bytes_per_layer"] > 0
    assert eff["achieved_keep_ratio"]["mean"] == pytest.approx(mean("achieved_keep_ratio"))
    assert 0 < eff["achieved_keep_ratio"]["mean"] <= 1
    assert eff["kv_tokens_per_layer"]["mean"] == pytest.approx(mean("kv_tokens_mean"))
    assert eff["prefill_seconds"]["total"] == pytest.approx(sum(r["prefill_seconds"] for r in records))
    assert eff["peak_memory_bytes"]["max"] == max(r["peak_memory_bytes"] for r in records)
    assert eff["samples_per_hour"] == stored["throughput"]["samples_per_hour"] > 0
    assert stored["chance_accuracy"] == pytest.approx(100 * sum(1 / len(s.options) for s in samples.values()) / len(samples))
    assert OmegaConf.to_container(OmegaConf.load(os.path.join(directory, "config.yaml")))["dataset"]["name"] == fmt


def test_missing_and_corrupt_videos_are_failures_not_crashes(bench):
    cfg = cell(bench["tiny"], "synthetic", bench["broken"], bench["root"] / "broken_runs")
    result = run_cell(cfg)
    samples = get_dataset("synthetic").load(bench["broken"])
    bad = {s.uid: os.path.basename(s.video) for s in samples if "missing" in s.video or "corrupt" in s.video}
    assert len(bad) == 4 and len(samples) == 8
    reasons = {f["uid"]: f["error"] for f in result["failures"]}
    assert set(reasons) == set(bad)
    for uid, error in reasons.items():
        assert bad[uid] in error and ("file not found" in error if "missing" in bad[uid] else "undecodable" in error)
    metrics = result["metrics"]
    assert metrics["num_failed"] == 4 and metrics["num_samples"] == 8
    records = read_lines(os.path.join(cell_path(cfg), "predictions.jsonl"))
    assert all((r["prediction"] is None) == (r["uid"] in bad) for r in records)
    assert metrics == get_dataset("synthetic").score(records) and result["lmms_eval"]["agrees"]


def test_finished_cell_is_skipped_without_loading_the_model(runs):
    cfg, result = runs["videomme"]
    directory = cell_path(cfg)
    files = [os.path.join(directory, n) for n in ("metrics.json", "predictions.jsonl", "predictions.rank0.jsonl")]
    before = [os.stat(p).st_mtime_ns for p in files]
    again = json.loads(json.dumps(cfg))
    again["model"]["pretrained"] = "/nonexistent/checkpoint"  # loading it would fail
    assert run_cell(again) == result
    assert [os.stat(p).st_mtime_ns for p in files] == before


def test_same_name_other_settings_fails(runs):
    cfg, _ = runs["lvbench"]
    other = json.loads(json.dumps(cfg))
    other["model"]["dtype"] = "bfloat16"  # not part of the directory name
    with pytest.raises(ValueError, match="different model"):
        run_cell(other)


# -- the cell-directory rule ------------------------------------------------------------------

def test_cell_names_come_from_the_config_only(tmp_path):
    base = cell("m", "videomme", "/d", tmp_path)
    base["engine"].update(max_context=16384, chunk_frames=32, max_new_tokens=16)
    base["sampling"].update(max_frames=1024, max_long_side=448, backend="pyav")
    name = lambda c: cell_name(resolve_config(c))
    assert name(base) == "tiny_qwen2_vl__adaretake__videomme__16384__1024"
    same = json.loads(json.dumps(base))
    same["method"]["params"] = {"r_min": 1e-3, "w_min": 1, "layer_allocation": "adaptive"}  # the defaults, spelled out
    same["run"]["overwrite"] = True
    same["dataset"]["data_root"] = "/elsewhere"
    assert name(same) == name(base)
    names = set()
    for params in ({"layer_allocation": "even"}, {"temporal_allocation": False}, {"r_min": 0.01},
                   {"temporal_allocation": False, "layer_allocation": "even"}):
        c = json.loads(json.dumps(base))
        c["method"]["params"] = params
        assert name(c).startswith("tiny_qwen2_vl__adaretake-") and name(c).endswith("__videomme__16384__1024")
        names.add(name(c))
    assert len(names) == 4
    for section, key, value in (("engine", "reforge_positions", True), ("engine", "chunk_frames", 16),
                                ("sampling", "fps", 1.0), ("engine", "max_guide_tokens", 64), ("run", "limit", 20),
                                ("sampling", "backend", "decord")):
        c = json.loads(json.dumps(base))
        c[section][key] = value
        names.add(name(c))
    assert len(names) == 10
    assert any(n.endswith("__reforge") for n in names) and any(n.endswith("__limit20") for n in names)


def test_paper_table_cells_never_collide():
    """Every cell of the Table 3 / Table 4 sweeps gets its own directory."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from retake.harness.schema import register

    register()
    conf = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=conf):
            for exp, axis, rows in (("table3", "+table3_row", [f"r{i}" for i in range(7)]),
                                    ("table4", "+table4_row", ["qwen2_vl_baseline", "qwen2_vl_adaretake",
                                                                  "llava_video_baseline", "llava_video_adaretake"])):
                cfgs = [compose("config", overrides=[f"+experiment={exp}", f"{axis}={r}", "dataset=videomme",
                                                     "data_root=/d"]) for r in rows]
                names = [cell_name(resolve_config(c)) for c in cfgs]
                assert len(set(names)) == len(rows), names
    finally:
        GlobalHydra.instance().clear()


# -- processes: kill and resume, sharding, the CLI ----------------------------------------------

def test_killed_run_resumes_to_the_same_predictions(bench, reference, tmp_path):
    """SIGKILL a runner process once a few samples are written; the rerun finishes the rest
    and ends with the uninterrupted run's predictions: none lost, none twice."""
    ref_cfg, ref_records = reference
    cfg = json.loads(json.dumps(ref_cfg))
    cfg["run"]["results_root"] = str(tmp_path / "runs")
    config = write_yaml(cfg, tmp_path / "cell.yaml")
    rank0 = os.path.join(cell_path(cfg), "predictions.rank0.jsonl")
    proc = subprocess.Popen(runner_cmd(config), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            if count_lines(rank0) >= 2:
                break
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    written = count_lines(rank0)
    assert 2 <= written < len(ref_records), "the run was not stopped half-way"
    assert not os.path.exists(os.path.join(cell_path(cfg), "metrics.json"))
    done = subprocess.run(runner_cmd(config), env=ENV, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = read_lines(rank0)
    assert len(lines) == len(ref_records) == len({r["uid"] for r in lines})  # each sample answered once
    assert stable(read_lines(os.path.join(cell_path(cfg), "predictions.jsonl"))) == stable(ref_records)


def test_reuse_and_prefetch_change_no_answer(bench, reference, tmp_path):
    """The reference run (defaults: reuse_videos=1, prefetch=1) answered 3 questions on each of
    3 videos, decoding and encoding each video once; with both off every answer is the same."""
    ref_cfg, ref_records = reference
    assert sum(r["video_reused"] for r in ref_records) == 6
    assert sorted(r["video"] for r in ref_records if not r["video_reused"]) == sorted({r["video"] for r in ref_records})
    cfg = json.loads(json.dumps(ref_cfg))
    cfg["run"].update(results_root=str(tmp_path / "runs"), reuse_videos=0, prefetch=0)
    assert cell_path(cfg).endswith(os.path.basename(cell_path(ref_cfg)))  # the same cell
    run_cell(cfg)
    records = read_lines(os.path.join(cell_path(cfg), "predictions.jsonl"))
    assert not any(r["video_reused"] for r in records)
    assert stable(records) == stable(ref_records)


def test_two_processes_give_the_same_predictions(bench, reference, tmp_path):
    """Two CPU processes (lmms-eval's strided sharding, one rank padded) = one process; the
    cell then resumes in one process from the two rank files without answering anything again."""
    ref_cfg, ref_records = reference
    cfg = json.loads(json.dumps(ref_cfg))
    cfg["run"]["results_root"] = str(tmp_path / "runs")
    config = write_yaml(cfg, tmp_path / "cell.yaml")
    # on CPU `accelerate launch --cpu` starts ONE process (multi-CPU wants mpirun); --multi_gpu
    # starts N, and the model sets ACCELERATE_USE_CPU for accelerate's gloo group
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "retake.harness.runner", "--config", config]
    done = subprocess.run(cmd, env=ENV, check=False, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    directory = cell_path(cfg)
    assert [len(read_lines(p)) for p in rank_files(os.path.join(directory, "predictions"))] == [5, 4]
    with open(os.path.join(directory, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["num_processes"] == 2 and metrics["lmms_eval"]["agrees"]
    assert stable(read_lines(os.path.join(directory, "predictions.jsonl"))) == stable(ref_records)
    # resume with another number of processes: everything is found in the two rank files
    os.remove(os.path.join(directory, "metrics.json"))
    sizes = [os.path.getsize(p) for p in rank_files(os.path.join(directory, "predictions"))]
    assert run_cell(cfg)["num_processes"] == 1
    assert [os.path.getsize(p) for p in rank_files(os.path.join(directory, "predictions"))] == sizes
    assert stable(read_lines(os.path.join(directory, "predictions.jsonl"))) == stable(ref_records)


@pytest.mark.slow
def test_lmms_eval_command_line_runs_the_model(bench, reference, tmp_path):
    """`lmms-eval --model retake --model_args ... --tasks retake_synthetic --include_path DIR`."""
    ref_cfg, ref_records = reference
    task_dir = os.path.join(cell_path(ref_cfg), "task")
    args = {"pretrained": bench["tiny"], "dtype": "float32", "device": "cpu", "method": "adaretake",
            "max_context": 1024, "chunk_frames": 4, "max_frames": 8, "max_long_side": 56,
            "predictions": str(tmp_path / "cli")}
    exe = os.path.join(os.path.dirname(sys.executable), "lmms-eval")
    cmd = [exe, "--model", "retake", "--model_args", model_args_string(parse_model_args(args)), "--tasks", "retake_synthetic",
           "--include_path", task_dir, "--gen_kwargs", "max_new_tokens=3", "--output_path", str(tmp_path / "out")]
    done = subprocess.run(cmd, env=ENV, check=False, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0 and "retake_accuracy" in done.stdout, done.stderr[-3000:]
    answers = {r["uid"]: r["prediction"] for r in read_predictions(str(tmp_path / "cli")).values()}
    assert answers == {r["uid"]: r["prediction"] for r in ref_records}


# -- interrupts, incomplete cells, retries -----------------------------------------------------

@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_says_what_is_saved_and_resumes(bench, reference, tmp_path, sig, code):
    """Ctrl-C (SIGINT) or SIGTERM, sent for real once a sample is written: one line saying how
    many answers are saved and how to resume, exit code 130 / 143, no traceback; every saved
    answer is on disk and the same command then finishes the rest, none answered twice."""
    ref_cfg, ref_records = reference
    cfg = json.loads(json.dumps(ref_cfg))
    cfg["run"]["results_root"] = str(tmp_path / "runs")
    config = write_yaml(cfg, tmp_path / "cell.yaml")
    directory = cell_path(cfg)
    rank0 = os.path.join(directory, "predictions.rank0.jsonl")
    proc = subprocess.Popen(runner_cmd(config), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None and count_lines(rank0) < 1:
        time.sleep(0.005)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    saved = count_lines(rank0)
    assert proc.returncode == code, err[-3000:]
    assert 1 <= saved < len(ref_records), "the run was not stopped half-way"
    assert "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == (f"[retake] interrupted: {saved} of {len(ref_records)} answers saved in "
                                            f"{directory}; rerun the same command to resume")
    done = subprocess.run(runner_cmd(config), env=ENV, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = read_lines(rank0)
    assert len(lines) == len(ref_records) == len({r["uid"] for r in lines})
    assert stable(read_lines(os.path.join(directory, "predictions.jsonl"))) == stable(ref_records)


def test_an_incomplete_cell_is_retried_not_skipped(bench, tmp_path, caplog):
    """Half the samples fail (a missing and a corrupt video): the cell is written as incomplete
    (status, failed fraction, in metrics.json and the tables), never skipped as done; the next
    run answers the failed samples again and only those; once the missing video is there it is
    answered; under a looser run.max_failed_fraction the cell is done and then skipped;
    run.retry_failed=true answers a done cell's failures again."""
    import logging
    import shutil

    from retake.harness.tables import collect

    caplog.set_level(logging.INFO, logger="retake")
    data = tmp_path / "data"
    shutil.copytree(bench["broken"], data, symlinks=True)
    cfg = cell(bench["tiny"], "synthetic", str(data), tmp_path / "runs")
    directory = cell_path(cfg)
    rank0 = os.path.join(directory, "predictions.rank0.jsonl")
    first = run_cell(cfg)
    assert first["status"] == "incomplete" and first["failed_fraction"] == 0.5 and len(first["failures"]) == 4
    assert "cell incomplete: 4 of 8 samples failed" in caplog.text
    row = collect(tmp_path / "runs").iloc[0]
    assert row["status"] == "incomplete" and row["failed_fraction"] == 0.5
    assert count_lines(rank0) == 8
    # not skipped: the four failures are answered again (and fail again), the others kept
    again = run_cell(cfg)
    assert "answering the 4 failed samples again" in caplog.text
    assert count_lines(rank0) == 12 and again["status"] == "incomplete" and len(again["failures"]) == 4
    # the missing video put back: those questions are answered now
    samples = get_dataset("synthetic").load(str(data))
    missing = sorted({s.video for s in samples if "missing" in s.video})
    good = next(s.video for s in samples if "missing" not in s.video and "corrupt" not in s.video)
    for path in missing:
        shutil.copy(good, path)
    fixed = run_cell(cfg)
    assert count_lines(rank0) == 16 and len(fixed["failures"]) == 2
    assert all("corrupt" in f["error"] for f in fixed["failures"])
    assert fixed["metrics"]["num_failed"] == 2 and fixed["status"] == "incomplete"  # 2 of 8 > 0.05
    records = read_lines(os.path.join(directory, "predictions.jsonl"))
    assert len(records) == 8 and sum(r["error"] is not None for r in records) == 2
    # a looser threshold: done (the two failures tried once more), then skipped
    loose = json.loads(json.dumps(cfg))
    loose["run"]["max_failed_fraction"] = 0.3
    done = run_cell(loose)
    assert done["status"] == "done" and count_lines(rank0) == 18
    assert run_cell(loose) == done and count_lines(rank0) == 18
    # retry_failed: a done cell's failures answered again
    retry = json.loads(json.dumps(loose))
    retry["run"]["retry_failed"] = True
    assert run_cell(retry)["status"] == "done" and count_lines(rank0) == 20
