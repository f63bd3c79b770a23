"""The bench scripts that time on the GPU, run on the CPU with the tiny pipeline: their records
have the shape bench/README.md reads, and a bad override is refused in one line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO


def bench_script(name: str, args: list[str], cwd) -> subprocess.CompletedProcess:
    """``python bench/<name>.py args`` in ``cwd``, its output captured."""
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / f"{name}.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def bench_module(name: str):
    """``bench/<name>.py`` imported as a module (the scripts are not a package), registered in
    ``sys.modules`` as an import would (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_busy_profile_warms_up_until_stable_then_times_each_side(tmp_path):
    out = tmp_path / "busy.json"
    result = bench_script(
        "gpu_busy_profile",
        [
            "pipeline=tiny",
            "steps=4",
            "batch_size=2",
            "--calls",
            "2",
            "--method",
            "accel=deepcache accel.cache_interval=2",
            "--out",
            str(out),
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["calls"] == 2
    assert list(report["sides"]) == ["baseline", "accel=deepcache accel.cache_interval=2"]
    for side in report["sides"].values():
        assert len(side["wall_calls_s"]) == 2 and all(t > 0 for t in side["wall_calls_s"])
        # warm-up until two batches agree: at least two, though the profile times one batch of prompts
        assert len(side["warmup_calls_s"]) >= 2
        assert side["busy_s"] is None  # no device events on the CPU
    method = report["sides"]["accel=deepcache accel.cache_interval=2"]
    assert method["wall_ratio"] == report["sides"]["baseline"]["wall_s"] / method["wall_s"]


def test_gpu_busy_profile_refuses_a_bad_override_in_one_line(tmp_path):
    out = tmp_path / "busy.json"
    result = bench_script(
        "gpu_busy_profile",
        ["pipeline=tiny", "--method", "accel=deepcache accel.cache_interval=0", "--out", str(out)],
        tmp_path,
    )
    assert result.returncode == 2
    assert "cache_interval" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_step_host_ops_counts_what_each_captured_region_leaves_to_the_host(tmp_path):
    """With the whole step captured, the host issues the loop's few operations per step whatever the
    scheduler (the UNet alone captured leaves it the scheduler's step and guidance too), and the
    images are the scheduler's."""
    out = tmp_path / "ops.json"
    result = bench_script("step_host_ops", ["pipeline=tiny", "steps=5", "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(row["scheduler"], row["captured"]) for row in rows] == [
        (scheduler, captured)
        for scheduler in ("DDIM", "DPM-Solver++", "UniPC")
        for captured in ("the UNet", "the whole step")
    ]
    for unet, step in zip(rows[::2], rows[1::2]):
        assert unet["steps_measured"] == step["steps_measured"] == 4  # between 5 calls
        assert step["operations_per_step"]["max"] == step["operations_per_step"]["min"]
        assert step["operations_per_step"]["max"] < unet["operations_per_step"]["min"]
        assert step["psnr_db_whole_step_vs_unet"] > 100


def test_flop_count_cost_times_every_way_of_counting_and_the_counts_agree(tmp_path):
    """Each side timed in every round; the kept results count what every formula counts (the script
    fails otherwise), and a batch's formula calls are replayed through both ways of counting."""
    out = tmp_path / "cost.json"
    result = bench_script(
        "flop_count_cost", ["accel=deepcache", "steps=4", "batch_size=2", "--rounds", "2", "--out", str(out)], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert {name: len(side["all"]) for name, side in report["seconds"].items()} == {
        "plain": 2,
        "bare mode": 2,
        "every formula": 2,
        "kept results": 2,
    }
    assert set(report["disturbed_passes"]) == set(report["seconds"])  # measure's watch, per side
    assert report["gflop_per_image"] > 0 and report["batch_size"] == 2 and report["steps"] == 4
    assert report["recorded_tensor_bytes"] == 0  # what it replays holds no activations (SD1.5 filled a GPU)
    assert report["formula_calls_per_batch"] > 0 and set(report["formulas_s_per_batch"]) == {
        "every formula",
        "kept results",
    }


def test_stack_sampler_writes_where_run_py_is_and_nothing_for_other_processes(tmp_path):
    """bench/stack_sampler: a device call stopped at its limit leaves these stacks and nothing else."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "bench" / "stack_sampler"), os.environ.get("PYTHONPATH", "")]),
        "STACK_LOG": str(tmp_path / "stacks.txt"),
        "STACK_EVERY": "0.2",
    }
    run = [sys.executable, str(REPO / "run.py"), "pipeline=tiny", "steps=2", "num_prompts=2", "batch_size=2"]
    run += [f"hydra.run.dir={tmp_path / 'run'}", f"summary_path={tmp_path / 'summary.csv'}"]
    result = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    stacks = (tmp_path / "stacks.txt").read_text()
    assert stacks.count("=== pid ") >= 2 and 'run.py", line' in stacks
    other = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.6)"], env=env, timeout=60)
    assert other.returncode == 0 and (tmp_path / "stacks.txt").read_text() == stacks


def test_stack_sampler_keeps_no_frame_alive_between_samples(tmp_path):
    """A sampled frame held until the next sample kept CUDA-graph pool tensors alive and failed inductor's pool check."""
    script = tmp_path / "run.py"
    script.write_text(
        "import sys, time, weakref\n"
        "class Held:\n"
        "    pass\n"
        "def hold():\n"
        "    held = Held()\n"
        "    time.sleep(2.5)\n"
        "    return weakref.ref(held)\n"
        "sys.exit(0 if hold()() is None else 3)\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "bench" / "stack_sampler"), os.environ.get("PYTHONPATH", "")]),
        "STACK_LOG": str(tmp_path / "stacks.txt"),
        "STACK_EVERY": "1",
    }
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, timeout=60)
    assert "in hold" in (tmp_path / "stacks.txt").read_text()  # sampled while the object was alive
    assert result.returncode == 0  # and released with its frame when hold() returned


def test_fast_recipe_runs_the_rows_asked_into_the_sweep_folder_named(tmp_path):
    """bench/fast_recipe.sh: ROWS picks the rows, and a second call with the same SWEEP tables the first one's."""
    sweep, out = tmp_path / "sweep", tmp_path / "out"
    env = {
        **os.environ,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        "OUT": str(out),
        "SWEEP": str(sweep),
        "MODE": "default",
        "DTYPE": "fp32",
        "PROMPTS": "2",
    }
    script = ["bash", str(REPO / "bench" / "fast_recipe.sh"), "tiny", "2"]
    for rows in ("3", ""):
        result = subprocess.run(
            script, cwd=REPO, env={**env, "ROWS": rows}, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    folder = out / "fast_tiny_b2"
    assert (folder / "rows.log").read_text().splitlines() == [
        "row 3 exit 0 (124: stopped at the deadline): accel=deepcache accel.cache_interval=3 accel.cache_branch_id=0"
    ]
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["3"]
    records = json.loads((folder / "report.json").read_text())
    assert [(r["method"], r["stack"], r["status"]) for r in records] == [("deepcache", "eager", "ok")]


def test_the_strong_baselines_report_names_the_stack_each_side_runs_on():
    report = bench_module("strong_baselines_report")
    step, unet = {"compile_targets": ["step", "vae_decoder"]}, {"compile_targets": ["unet"]}
    assert report._stack(["deepcache", "fused_qkv", "quantize", "compile"], step) == "fast recipe, whole step"
    assert report._stack(["deepcache", "fused_qkv", "quantize", "compile"], unet) == "fast recipe"
    assert report._stack(["deepcache", "compile"], step) == "CUDA graphs, whole step"
    assert report._stack(["tome", "compile"], unet) == "CUDA graphs"
    assert report._stack(["tgate"], {}) == "eager"


def test_eager_pace_probe_keeps_the_least_cpu_time_of_its_runs():
    """A probe is the least of its runs on the thread's CPU clock: one slow run (a long work, as an
    interrupt's would be) does not move it; the probes' work is fixed, so a slower probe is a slower CPU."""
    pace = bench_module("eager_pace")
    lengths = iter([2_000_000, 200_000, 2_000_000])

    def work() -> None:
        total = 0
        for i in range(next(lengths)):
            total += i

    started = time.thread_time()
    least = pace._least_cpu_s(work)
    assert least * 5 < time.thread_time() - started  # the short run, not a long one nor their mean
    probe = pace.probe_pace()
    assert probe.interpreter_s > 0 and probe.memory_s > 0


def test_eager_pace_logs_each_measured_batch_and_pauses_the_collector_only_where_asked(tmp_path):
    """A batch's log counts the collections inside it: cyclic garbage made inside the batch is collected
    there when the collector runs, never while it is paused (then after the batch, its state restored).
    The script's record has one log entry per measured batch of each side, in their order."""
    import gc

    pace = bench_module("eager_pace")

    def garbage(batch, generators):  # cycles, as a pipeline's Python leaves some
        for _ in range(5000):
            cycle: list = []
            cycle.append(cycle)
        return batch

    threshold = gc.get_threshold()
    gc.set_threshold(100)
    pauses, probed = pace.Pauses(), [pace.Pace(interpreter_s=0.002, memory_s=0.0003)]
    gc.callbacks.append(pauses)
    try:
        logs = {pause: [] for pause in (False, True)}
        for pause, log in logs.items():
            pace.observed(garbage, pause, pauses, log, lambda: None, probed)(["a"], [])
            assert gc.isenabled()
    finally:
        gc.callbacks.remove(pauses)
        gc.set_threshold(*threshold)
    assert sum(logs[False][0]["gc_by_generation"]) > 0 and logs[False][0]["gc_pause_s"] > 0
    assert logs[True][0]["gc_by_generation"] == [0, 0, 0] and logs[True][0]["gc_pause_s"] == 0
    assert logs[True][0]["pace_interpreter_s"] == 0.002 and logs[True][0]["pace_memory_s"] == 0.0003

    out = tmp_path / "pace.json"
    result = bench_script(
        "eager_pace", ["num_prompts=2", "batch_size=1", "steps=2", "repeats=2", "--out", str(out)], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert list(report["sides"]) == list(pace.SIDES)
    for side in report["sides"].values():
        assert len(side["batches"]) == 4 and len(side["pass_latencies_s"]) == 2  # 2 passes of 2 batches
        assert all(b["batch_s"] > 0 and b["thread_cpu_s"] > 0 and b["sm_clock_mhz"] is None for b in side["batches"])
        assert all(b["pace_interpreter_s"] > 0 and b["pace_memory_s"] > 0 for b in side["batches"])
        assert side["summary"]["pace_interpreter"]["max_over_min"] >= 1
    for name in pace.SIDES[1:]:
        assert report["sides"][name]["summary"]["gc_collections"] == [0, 0, 0]
    assert report["host_cores"] == len(os.sched_getaffinity(0))  # the one-core side gave the cores back
    assert report["cuda_device_flags"] is None  # not asked

    refused = bench_script(
        "eager_pace", ["num_prompts=2", "--blocking-sync", "--out", str(tmp_path / "b.json")], tmp_path
    )
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: --blocking-sync=True is not allowed: a CUDA device (a CPU run has no GPU to wait for)"
    ]
    assert not (tmp_path / "b.json").exists()


def test_suite_time_records_each_file_and_the_least_wall_time_the_machines_cpu_time_allows(tmp_path):
    out = tmp_path / "suite_time.json"
    out.write_text(json.dumps({"runs": [{"kept": True}]}))  # an earlier run stays
    files = ["tests/test_bar.py", "tests/test_prompts.py"]
    result = bench_script("suite_time", ["--out", str(out), "--top", "3", "--", *files, "-p", "no:cacheprovider"], REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    kept, run = json.loads(out.read_text())["runs"]
    assert kept == {"kept": True}
    assert run["command"] == "python bench/suite_time.py -- " + " ".join([*files, "-p", "no:cacheprovider"])
    assert sorted(run["files"]) == files and sum(f["tests"] for f in run["files"].values()) == run["tests"] > 0
    walls = [t["wall_s"] for t in run["slowest"]]
    assert len(walls) == 3 and walls == sorted(walls, reverse=True)
    assert all(t["test"].split("::")[0] in files for t in run["slowest"])
    assert run["machine"]["cores"] == os.cpu_count() and 0 < run["cores_busy"] <= 1.01
    assert run["least_wall_s"] == pytest.approx(run["cpu_s"] / os.cpu_count(), abs=0.1)
    assert run["least_wall_s"] <= run["wall_s"]
    assert f"at least {run['least_wall_s']:.0f} s" in result.stdout

    failing = tmp_path / "test_fails.py"
    failing.write_text("def test_fails():\n    assert False\n")
    result = bench_script("suite_time", ["--out", str(out), "--", str(failing), "-p", "no:cacheprovider"], REPO)
    assert result.returncode == 1 and "1 failed; nothing recorded" in result.stderr
    assert len(json.loads(out.read_text())["runs"]) == 2
