"""Sweeps: named grids expand as documented; one process loads the model and measures the
baseline once; failures and invalid values become rows; sweeps resume; parallel jobs share a
baseline; an interrupted sweep keeps its finished rows."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from accel_bench.accelerators.tgate import TGate, gate_step_for
from accel_bench.config import CONF_DIR, check, compose_run_config
from accel_bench.errors import ConfigError
from accel_bench.record import read_frame
from accel_bench.sweep.layout import SweepLayout
from accel_bench.sweep.packing import Job, pack_jobs

from .conftest import REPO, run_cli

FAST_SWEEP = ["steps=3", "batch_size=2", "num_prompts=2", "warmup_batches=1", "count_flops=false"]
GRID_SIZES = {
    "deepcache": 60,
    "tome": 21,
    "tgate": 48,
    "deepcache_tome": 30,
    "tgate_deepcache": 20,
    "tgate_tome": 24,
    "tgate_deepcache_tome": 16,
}


def grid_sweeper_class():
    """Hydra's plugin scan re-executes plugin modules: take the class it registered, after a compose."""
    compose_run_config_with_hydra([])
    return sys.modules["hydra_plugins.accel_bench_sweeper.grid_sweeper"].GridSweeper


def expand(overrides):
    """The jobs a named sweep launches, from its composed hydra.sweeper config."""
    hydra_cfg = compose_run_config_with_hydra(overrides).hydra.sweeper
    params, grids = (
        OmegaConf.to_container(node) if node is not None else None for node in (hydra_cfg.params, hydra_cfg.grids)
    )
    sweeper = grid_sweeper_class()(max_batch_size=None, params=params, grids=grids)
    sweeper.hydra_context = SimpleNamespace(config_loader=None)
    return sweeper.job_overrides([])


def compose_run_config_with_hydra(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name", sorted(GRID_SIZES))
def test_named_sweep_composes_and_every_job_is_checked_not_crashed(name):
    jobs = expand([f"+sweep={name}"])
    assert len(jobs) == GRID_SIZES[name]
    outcomes = set()
    for job in jobs:
        cfg = compose_run_config([*job, "steps=20"])
        try:
            check(cfg)
            outcomes.add("ok")
        except ConfigError:
            outcomes.add("invalid")
    assert "ok" in outcomes


def test_full_sweep_covers_the_27_combinations_with_every_grid():
    jobs = expand(["+sweep=full"])
    assert len(jobs) == 27 * sum(GRID_SIZES.values())
    combos = {tuple(o for o in job if o.split("=")[0] in ("pipeline", "scheduler", "steps")) for job in jobs}
    assert len(combos) == 27
    assert {o for job in jobs for o in job if o.startswith("accel=")} == {f"accel={name}" for name in GRID_SIZES}


def test_strong_sweep_puts_every_stacked_method_against_its_own_stack():
    jobs = [dict(o.split("=", 1) for o in job) for job in expand(["+sweep=strong"])]
    stacks = {(j["accel"], j.get("baseline.compile", "none"), j.get("baseline.recipe", "none")) for j in jobs}
    assert ("fast", "none", "none") in stacks and ("deepcache_fast", "none", "fast") in stacks
    assert ("deepcache_fast", "none", "none") in stacks and ("deepcache_compile", "reduce-overhead", "none") in stacks
    assert {("tgate_fast", "none", "fast"), ("tome_fast", "none", "fast")} <= stacks  # every method on the recipe
    for method in (
        "deepcache",
        "tome",
        "tgate",
        "tgate_tome",
        "tgate_deepcache",
        "deepcache_tome",
    ):  # on CUDA graphs too
        assert {(method, "none", "none"), (f"{method}_compile", "reduce-overhead", "none")} <= stacks
    assert all(j.get("accel.fullgraph") == "True" for j in jobs if j["accel"].endswith("_compile"))
    steps = [j for j in jobs if j.get("accel.compile_targets") == "[step]"]
    stacks = sorted(
        (j["accel"], j.get("baseline.compile", "none"), j.get("baseline.whole_step", "False")) for j in steps
    )
    assert stacks == sorted(
        6
        * [  # 3 pipelines x 2 batch sizes
            ("compile", "none", "False"),
            ("compile", "reduce-overhead", "False"),
            ("deepcache_compile", "none", "False"),
            ("deepcache_compile", "reduce-overhead", "True"),
            ("tgate_compile", "reduce-overhead", "True"),
            ("tome_compile", "reduce-overhead", "True"),
        ]
    )
    # they compose (CUDA-graph modes are checked on a GPU)
    for job in steps + [j for j in jobs if "fast" in j["accel"]]:
        cfg = compose_run_config([f"{k}={v}" for k, v in job.items()])
        assert cfg.baseline.recipe in ("none", "fast") and cfg.accel.name == job["accel"]
        assert list(cfg.accel.compile_targets) == (["step"] if job in steps else cfg.accel.compile_targets)
    for job in [j for j in jobs if "fast" in j["accel"]]:  # and pass the checks, in this CPU's compile mode
        cpu = ["dtype=fp32", "accel.mode=max-autotune-no-cudagraphs"]
        cpu += ["baseline.compile=max-autotune-no-cudagraphs"] if job.get("baseline.recipe") == "fast" else []
        check(compose_run_config([f"{k}={v}" for k, v in job.items()] + cpu))


def test_published_sweep_matches_the_papers_settings():
    jobs = [dict(o.split("=", 1) for o in job) for job in expand(["+sweep=published"])]
    assert len(jobs) == 3 * 2 * (2 + 1 + 2 + 1 + 1)
    assert {(j["accel"], j["steps"]) for j in jobs if j["accel"] == "tgate"} == {("tgate", "25"), ("tgate", "50")}
    for job in jobs:
        check(
            compose_run_config([f"{k}={v}" for k, v in job.items()] + ["dtype=fp32"])
        )  # every job valid (fp16 is for the GPU)


@pytest.mark.parametrize("steps", [20, 25, 50])
def test_tgate_grid_fits_every_step_count(steps):
    gates = set()
    for job in expand(["+sweep=tgate"]):
        cfg = compose_run_config([*job, f"steps={steps}"])
        check(cfg)  # relative gate steps are valid at any step count
        gates.add(gate_step_for(TGate.params_from(cfg.accel), steps))
    assert gates == {round(f * steps) for f in (0.2, 0.3, 0.4, 0.5)}


def test_command_line_sweeps_still_cross_multiply():
    sweeper = grid_sweeper_class()(max_batch_size=None, params={}, grids={})
    sweeper.hydra_context = SimpleNamespace(config_loader=None)
    jobs = sweeper.job_overrides(["accel.cache_interval=2,3", "accel.cache_branch_id=0,1,2", "steps=5"])
    assert len(jobs) == 6 and all("steps=5" in job for job in jobs)


def test_slurm_launcher_config():
    cfg = compose_run_config_with_hydra(
        ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.account=lab"]
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("PackedSlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.partition, launcher.account) == (
        1,
        1,
        "gpu",
        "lab",
    )
    assert launcher.timeout_min > 0 and launcher.jobs_per_task == 6 and launcher.max_num_timeout == 0


def test_jobs_sharing_a_pipeline_are_packed_deterministically():
    jobs = [
        Job(n, tuple(o))
        for n, o in enumerate(
            [
                ["pipeline=sd15", "steps=20", "accel.cache_interval=2"],
                ["pipeline=sdxl", "steps=20", "accel.cache_interval=2"],
                ["pipeline=sd15", "steps=50", "accel.cache_interval=2"],
                ["pipeline=sd15", "steps=20", "accel.cache_interval=3"],
                ["pipeline=sd15", "pipeline.weights=random", "steps=20", "accel.cache_interval=2"],
            ]
        )
    ]
    packs = pack_jobs(jobs, jobs_per_task=2)
    assert [[job.num for job in pack.jobs] for pack in packs] == [[0, 3], [2], [1], [4]]  # same baseline side by side
    assert [pack.index for pack in packs] == [0, 1, 2, 3]
    assert pack_jobs(list(reversed(jobs)), 2) == pack_jobs(list(reversed(jobs)), 2)
    assert [[job.num for job in pack.jobs] for pack in pack_jobs(jobs, 1)] == [[0], [3], [2], [1], [4]]
    assert len(pack_jobs(jobs, 10)) == 3  # one task per pipeline


@pytest.mark.parametrize(
    "launcher,key,value,allowed",
    [
        ("slurm", "jobs_per_task", "0", "an integer >= 1"),
        ("slurm", "jobs_per_task", "abc", "an integer >= 1 (jobs one task runs in one process)"),
        # a value its type refuses (Hydra's check, before the launcher's) says the launcher's bound too
        ("slurm", "nodes", "1.5", "an integer >= 1"),
        ("slurm", "poll_s", "abc", "seconds > 0"),
        ("local", "parallel", "abc", "an integer >= 1 (CPU tasks at a time)"),
        ("local", "parallel", "0", "an integer >= 1 (CPU tasks at a time)"),
        ("slurm", "lost_after_s", "-1.5", "seconds >= 0"),
        # what sbatch would refuse in a traceback, refused before anything is submitted
        ("slurm", "timeout_min", "-1", "an integer >= 1"),
        ("slurm", "gpus_per_node", "-1", "null or an integer >= 0"),
        ("slurm", "mem_gb", "-5", "null or a number > 0"),
        ("slurm", "array_parallelism", "0", "an integer >= 1"),
    ],
)
def test_bad_launcher_value_is_one_line_and_exit_2_with_nothing_submitted(tmp_path, launcher, key, value, allowed):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        [
            "-m",
            f"hydra/launcher={launcher}",
            f"hydra.launcher.{key}={value}",
            "accel.cache_interval=2,3",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: hydra.launcher.{key}='{value}' is not allowed: {allowed}") or line.startswith(
        f"error: hydra.launcher.{key}={value} is not allowed: {allowed}"
    )
    assert not sweep_dir.exists() and not (tmp_path / "multirun").exists()


def test_local_gpus_launcher_gives_each_task_its_own_gpu_and_a_job_that_sees_none_fails(tmp_path):
    """On this CPU-only machine: the launcher hands tasks CUDA_VISIBLE_DEVICES=0 and =1, in parallel;
    their jobs see no GPU and fail with that message instead of measuring on the CPU."""
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=local_gpus",
        "hydra.launcher.gpus=[0,1]",
        "hydra.launcher.jobs_per_task=1",
        "hydra.launcher.poll_s=0.2",
        "accel.cache_interval=2,3",
        *FAST_SWEEP,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_path={tmp_path / 'all.csv'}",
    ]
    result = run_cli(args, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "task 0 (1 jobs) on GPU 0" in result.stdout and "task 1 (1 jobs) on GPU 1" in result.stdout
    assert "[sweep] 2 jobs: 0 ok, 2 failed, 0 invalid, 0 skipped, 0 lost" in result.stdout
    rows = _sweep_rows(sweep_dir).sort_values("run_dir")
    seen = [error.split("CUDA_VISIBLE_DEVICES=")[1].split(")")[0] for error in rows.error]
    assert sorted(seen) == ["0", "1"]
    assert (
        rows.error.str.contains("asked for 1 GPU").all()
        and rows.error.str.contains("would have measured on the CPU").all()
    )


def test_local_gpus_launcher_refuses_a_machine_without_gpus(tmp_path):
    result = run_cli(
        ["-m", "hydra/launcher=local_gpus", "accel.cache_interval=2,3", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: hydra.launcher.gpus='auto' is not allowed: a list of GPU indices: this machine shows "
        "no CUDA GPU (hydra/launcher=local runs CPU tasks)"
    )


def test_local_launcher_packs_jobs_loads_once_per_task_and_names_where_each_ran(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.jobs_per_task=2",
        "hydra.launcher.poll_s=0.2",
        "accel.cache_interval=2,3,4",
        *FAST_SWEEP,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_path={tmp_path / 'all.csv'}",
    ]
    result = run_cli(args, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[sweep] 3 jobs: 3 in 2 local tasks of up to 2 jobs" in result.stdout
    assert "[sweep] 3 jobs: 3 ok, 0 failed, 0 invalid, 0 skipped, 0 lost" in result.stdout
    assert "3 jobs ran for" in result.stdout and "2 pipeline loads" in result.stdout
    rows = _sweep_rows(sweep_dir)
    assert (rows.pipeline_load_s > 0).sum() == 2 and (rows.baseline_cached == False).sum() == 1  # noqa: E712
    logs = "".join(p.read_text() for p in SweepLayout(sweep_dir).submitit.glob("*/*_log.out"))
    assert logs.count(f" ok on {os.uname().nodename} cpu (") == 3


def _sweep_rows(sweep_dir):
    return read_frame(sweep_dir / "summary.csv")


def test_basic_sweep_loads_once_measures_baseline_once_isolates_failures_and_resumes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        "pipeline=tiny,sd15",
        "pipeline.model_id=accel-bench/never-downloaded",
        "resolution=64",
        "clip.model=tiny",
        "accel.cache_interval=2,3",
        "accel.cache_branch_id=0,9",
        *FAST_SWEEP,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_path={tmp_path / 'all.csv'}",
    ]
    first = run_cli(args, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[sweep] 8 jobs: 2 ok, 4 failed, 2 invalid, 0 skipped" in first.stdout
    assert (
        f"[sweep] job 7 failed on {os.uname().nodename} - | 8/8 jobs recorded" in first.stdout
    )  # failed before a device
    assert f"[sweep] job 0 ok on {os.uname().nodename} cpu (" in first.stdout
    assert "[sweep] 8 jobs ran for" in first.stdout and "1 pipeline loads" in first.stdout
    rows = _sweep_rows(sweep_dir)
    assert len(rows) == 8 and rows.run_dir.is_unique
    ok = rows[rows.status == "ok"].sort_values("timestamp", kind="stable")
    assert list(ok.baseline_cached) == [False, True]  # measured by the first job, reused by the second
    assert ok.base_pass_latencies_s.nunique() == 1  # one measurement (figures may take fewer of its passes)
    assert ok.pipeline_load_s.iloc[0] > 0 and ok.pipeline_load_s.iloc[1] == 0  # loaded once
    failed = rows[rows.status == "failed"]
    assert len(failed) == 4 and failed.error.str.contains("accel-bench/never-downloaded").all()
    assert set(rows[rows.status == "invalid"].pipeline) == {"tiny"}  # branch 9 exists on SD1.5, not on tiny

    second = run_cli(args, cwd=tmp_path, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "[sweep] 8 jobs: 0 ok, 4 failed, 2 invalid, 2 skipped" in second.stdout
    again = _sweep_rows(sweep_dir)
    assert len(again) == 8 and again.run_dir.is_unique
    kept = again[again.status == "ok"].set_index("run_dir")
    assert (kept.timestamp == ok.set_index("run_dir").timestamp).all()  # ok jobs were not re-run
    assert len(read_frame(tmp_path / "all.csv")) == 8 + 6  # the global log records every executed job

    # another sweep into this folder would run its jobs into the numbered folders that hold these results
    plan = (sweep_dir / "sweep_plan.json").read_bytes()
    other = run_cli([a.replace("cache_interval=2,3", "cache_interval=2,4") for a in args], cwd=tmp_path)
    assert other.returncode == 2 and "Traceback" not in other.stderr, other.stderr[-3000:]
    assert other.stderr.strip().splitlines()[-1] == (
        f"error: hydra.sweep.dir='{sweep_dir}' is not allowed: a folder of this sweep's own: job(s) 2, 3, 6, 7 "
        "there hold results of other overrides (sweep_plan.json); the same overrides resume that sweep"
    )  # jobs 0, 1, 4 and 5 (interval 2) are the same jobs: not in the way
    assert (sweep_dir / "sweep_plan.json").read_bytes() == plan
    assert _sweep_rows(sweep_dir).equals(again) and len(read_frame(tmp_path / "all.csv")) == 8 + 6

    # a summary edited by hand so that a row no longer reads back: refused before any job runs
    summary = sweep_dir / "summary.csv"
    edited = summary.read_text().replace(",failed,", ",failled,", 1)
    summary.write_text(edited)
    broken = run_cli(args, cwd=tmp_path)
    assert broken.returncode == 2 and len(broken.stderr.strip().splitlines()) == 1, broken.stderr[-3000:]
    assert (
        broken.stderr.startswith(
            f"error: hydra.sweep.dir='{sweep_dir}' is not allowed: a sweep folder whose summary reads back: {summary} line "
        )
        and "status='failled' is not one of" in broken.stderr
    )
    assert summary.read_text() == edited and len(read_frame(tmp_path / "all.csv")) == 8 + 6


def test_parallel_local_tasks_share_one_baseline(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=local",
        "hydra.launcher.parallel=2",
        "hydra.launcher.jobs_per_task=1",
        "hydra.launcher.poll_s=0.2",
        "accel.cache_interval=2,3",
        *FAST_SWEEP,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_path={tmp_path / 'all.csv'}",
    ]
    result = run_cli(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[sweep] 2 jobs: 2 ok, 0 failed, 0 invalid, 0 skipped" in result.stdout
    rows = _sweep_rows(sweep_dir)
    assert sorted(rows.baseline_cached) == [False, True]
    # one measurement: every pass of it in both rows (a row's figures take fewer of them where the
    # other side's passes were disturbed, as they may be with two tasks on two cores)
    assert rows.base_pass_latencies_s.nunique() == 1
    assert len(list((sweep_dir / "baselines").glob("*.npz"))) == 1


def test_interrupted_sweep_keeps_finished_rows_and_resumes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        "accel.cache_interval=2,3,4,5",
        *FAST_SWEEP,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_path={tmp_path / 'all.csv'}",
    ]
    process = subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    summary = sweep_dir / "summary.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (summary.exists() and len(summary.read_text().splitlines()) >= 2):
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    finished = _sweep_rows(sweep_dir)
    assert 1 <= len(finished) < 4 and (finished.status == "ok").all()

    result = run_cli(args, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{len(finished)} skipped" in result.stdout
    rows = _sweep_rows(sweep_dir)
    assert len(rows) == 4 and rows.run_dir.is_unique and (rows.status == "ok").all()


def _processes_naming(text):
    """Live processes (zombies aside) whose command line contains ``text``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if text in command and " Z " not in state + " ":
            found.append(int(proc.name))
    return found


def test_a_terminated_local_sweep_takes_its_task_processes_with_it(tmp_path):
    """SIGTERM to the sweep (``timeout``, a batch system) stops its running task instead of leaving
    it measuring on the machine unwatched."""
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=local", "hydra.launcher.poll_s=0.2", "accel.cache_interval=2,3,4,5"]
    process = subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), *args, *FAST_SWEEP, f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(
        pid != process.pid for pid in _processes_naming(f"submitit.core._submit {sweep_dir}")
    ):
        time.sleep(0.2)
    assert _processes_naming(f"submitit.core._submit {sweep_dir}"), "the task never started"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert "[sweep] interrupted: stopping 1 running tasks" in output, output[-3000:]
    deadline = time.time() + 10
    while time.time() < deadline and _processes_naming(str(sweep_dir)):
        time.sleep(0.2)
    assert _processes_naming(str(sweep_dir)) == []


def test_rows_name_the_physical_gpu_a_task_was_given(monkeypatch):
    import torch

    from accel_bench.environment import physical_device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # what local_gpus / Slurm hand a task
    assert physical_device(torch.device("cuda", 1)) == "cuda:5"
    assert physical_device(torch.device("cuda", 0)) == "cuda:3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert physical_device(torch.device("cuda", 1)) == "cuda:1"
    assert physical_device(torch.device("cpu")) == "cpu"


@pytest.mark.parametrize("requeued", [True, False])
def test_a_requeued_task_exits_whatever_error_its_interrupted_job_raises(tmp_path, monkeypatch, requeued):
    """submitit ends a preempted task by raising SystemExit from its signal handler, wherever the job
    was; OmegaConf's cleanup of a half-built list raised AttributeError in its place (a CI run: the
    task recorded as failed, its jobs reported lost while the requeued task ran them). Once requeued,
    the task exits and records nothing; without a requeue the error is the job's own."""
    from hydra.core.singleton import Singleton

    from accel_bench.sweep.packing import Pack
    from accel_bench.sweep.tasks import PackedTask, TaskProgress

    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "7")

    def load_sweep_config(config, overrides):
        if requeued:
            task.checkpoint()  # what submitit's handler calls before it raises SystemExit
        raise AttributeError("'NoneType' object has no attribute '_invalidate_flags_cache'")

    context = SimpleNamespace(config_loader=SimpleNamespace(load_sweep_config=load_sweep_config))
    task = PackedTask(None, None, print)
    task.hydra_context = context
    pack = Pack(0, (Job(0, ("steps=2",)), Job(1, ("steps=3",))))
    progress_path = tmp_path / "progress.json"
    with pytest.raises(SystemExit if requeued else AttributeError) as raised:
        task(pack, str(progress_path), Singleton.get_state())
    if requeued:
        assert raised.value.code == -1 and isinstance(raised.value.__cause__, AttributeError)
    progress = TaskProgress.read(progress_path, pack)
    assert (progress.starts, progress.done, progress.job_id) == (1, {}, "7")
