"""Sweeps on a real one-node Slurm cluster with accounting (munge, MariaDB, slurmdbd, slurmctld,
slurmd), started by scripts/local_slurm.sh: packed array tasks, a hard-killed task, a requeued
task, and a lost task on a cluster whose accounting is down. No mock of sbatch anywhere.

A task is hard-killed the way the OOM killer does it, SIGKILL to its process: in this container
Slurm's proctrack/linuxproc cannot end a job step's processes, so ``scancel -s KILL`` ends the
job in Slurm's books while its process runs on (a real node's cgroups would end it)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from accel_bench.record import read_frame
from accel_bench.sweep.layout import SweepLayout

from .conftest import REPO

SCRIPT = REPO / "scripts" / "local_slurm.sh"
# a task per CPU of this machine, no GPU: the tiny pipeline on the CPU
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=null",
    "hydra.launcher.poll_s=0.5",
]
QUICK = ["steps=3", "batch_size=2", "num_prompts=2", "warmup_batches=1", "count_flops=false"]
SLOW = ["steps=20", "batch_size=2", "num_prompts=4", "warmup_batches=1", "count_flops=false"]  # jobs of several seconds


@pytest.fixture(scope="module")
def slurm():
    if shutil.which("sbatch") is None or shutil.which("slurmctld") is None:
        pytest.skip("Slurm is not installed here: `scripts/local_slurm.sh install` (root, Debian) installs it")
    if os.geteuid() != 0:
        pytest.skip("the local Slurm cluster runs its daemons as root")
    system_slurm = _files(Path("/etc/slurm"))
    started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr  # installed but not starting: a real failure
    assert _files(Path("/etc/slurm")) == system_slurm  # the machine's own Slurm configuration is not ours to touch
    conf = subprocess.run(["bash", str(SCRIPT), "env"], capture_output=True, text=True, check=True).stdout.strip()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf.partition("SLURM_CONF=")[2]  # our cluster's clients, sweeps and tests
    yield
    if previous is None:
        os.environ.pop("SLURM_CONF")
    else:
        os.environ["SLURM_CONF"] = previous


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return (
        {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}
        if folder.is_dir()
        else {}
    )


def start_sweep(args, tmp_path, log_name="sweep.log"):
    log = (tmp_path / log_name).open("w")
    return subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), "-m", *args],
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process, tmp_path, log_name="sweep.log", timeout=300):
    process.wait(timeout=timeout)
    return process.returncode, (tmp_path / log_name).read_text()


def progress_files(sweep_dir: Path):
    return SweepLayout(sweep_dir).task_progress_files


def wait_for_progress(sweep_dir: Path, done: int, timeout=240) -> dict:
    """The first task progress record with at least ``done`` finished jobs (and not all of them)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for path in progress_files(sweep_dir):
            try:
                record = json.loads(path.read_text())
            except (json.JSONDecodeError, FileNotFoundError):
                continue
            if done <= len(record["done"]) < len(record["jobs"]):
                return record
        time.sleep(0.1)
    raise AssertionError(f"no task reached {done} finished jobs in {timeout} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def rows(path: Path) -> pd.DataFrame:
    return read_frame(path)


def test_packed_sweep_loads_each_pipeline_once_per_task_and_writes_every_job(slurm, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        *SLURM,
        "hydra.launcher.jobs_per_task=2",
        "accel.cache_interval=2,3,4",
        "accel.cache_branch_id=0,9",
        *QUICK,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_path={tmp_path / 'all.csv'}",
    ]
    code, out = finish(start_sweep(args, tmp_path), tmp_path)
    assert code == 0, out[-3000:]
    assert "[sweep] 6 jobs: 6 in 3 slurm tasks of up to 2 jobs" in out
    assert "[sweep] 6 jobs: 3 ok, 0 failed, 3 invalid, 0 skipped, 0 lost" in out
    assert "inside measured pipeline calls" in out
    table = rows(sweep_dir / "summary.csv")
    assert len(table) == 6 and table.run_dir.is_unique
    for num in range(6):
        assert (sweep_dir / str(num) / "result.json").exists()
    ok = table[table.status == "ok"]
    assert (ok.pipeline_load_s > 0).sum() == len(
        {
            r["job_id"]
            for r in map(lambda p: json.loads(p.read_text()), progress_files(sweep_dir))
            if any(s == "ok" for s in r["done"].values())
        }
    )  # one load per task with ok jobs
    assert (ok.baseline_cached == False).sum() == 1  # noqa: E712 -- one baseline for the sweep, shared through the sweep dir
    assert set(table.host) == {os.uname().nodename}
    logs = "".join(p.read_text() for p in SweepLayout(sweep_dir).submitit.glob("*/*_log.out"))
    assert f"ok on {os.uname().nodename} cpu (" in logs  # each job's line names host and device


GRID = ["accel.cache_interval=2,3"]
SEARCH = ["hydra/sweeper=search", "+sweep=deepcache"]  # its first round refused: no search state left either


@pytest.mark.parametrize(
    "override, key, said, folder, space",
    [
        ("hydra.launcher.partition=nope", "hydra.launcher.partition='nope'", "Invalid partition name", None, GRID),
        ("hydra.launcher.constraint=nogpu", "hydra.launcher.constraint='nogpu'", "Invalid feature", None, GRID),
        ("hydra.launcher.partition=nope", "hydra.launcher.partition='nope'", "Invalid partition name", None, SEARCH),
        # into a folder holding something already (a resumed sweep's submitit folder): only that is left
        (
            "hydra.launcher.partition=nope",
            "hydra.launcher.partition='nope'",
            "Invalid partition",
            [".submitit/a"],
            GRID,
        ),
    ],
)
def test_a_submission_sbatch_refuses_is_one_line_naming_the_key_with_nothing_queued_nor_left(
    slurm, tmp_path, override, key, said, folder, space
):
    sweep_dir = tmp_path / "sweep"
    for name in folder or []:
        (sweep_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (sweep_dir / name).write_text("kept\n")
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    result = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "-m", *SLURM, override, *space, *QUICK]
        + [f"hydra.sweep.dir={sweep_dir}", f"summary_path={tmp_path / 'all.csv'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()  # sbatch's own lines are in it, not beside it
    assert line.startswith(f"error: {key} is not allowed: what this cluster's sbatch accepts (") and said in line
    assert line.endswith("; nothing was submitted") and "Traceback" not in result.stdout
    after = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    assert set(after.split()) <= set(before.split())  # no job of its own (another test's may have left since)
    # the folder as it was: no plan, multirun.yaml or pickled task of a submission that never was
    left = sorted(str(p.relative_to(sweep_dir)) for p in sweep_dir.rglob("*") if p.is_file()) if folder else None
    assert left == (sorted(folder) if folder else None) and sweep_dir.exists() == bool(folder)


def test_hard_killed_task_loses_only_its_unfinished_jobs_and_the_printed_command_runs_exactly_them(slurm, tmp_path):
    sweep_dir, summary = tmp_path / "sweep", tmp_path / "all.csv"
    args = [
        *SLURM,
        "hydra.launcher.jobs_per_task=2",
        "accel.cache_interval=2,3,4,5",
        *SLOW,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_path={summary}",
    ]
    process = start_sweep(args, tmp_path)
    victim = wait_for_progress(sweep_dir, done=1)
    os.kill(victim["pid"], signal.SIGKILL)
    code, out = finish(process, tmp_path)
    assert code == 3, out[-3000:]
    assert "Traceback" not in out
    (lost,) = [num for num in victim["jobs"] if str(num) not in victim["done"]]
    assert f"ended FAILED; lost jobs {lost} (1 of 2 recorded)" in out
    assert "[sweep] 4 jobs: 3 ok, 0 failed, 0 invalid, 0 skipped, 1 lost" in out
    assert f"[sweep] lost: job {lost}: no result" in out
    recorded = rows(sweep_dir / "summary.csv")
    assert len(recorded) == 3 and (recorded.status == "ok").all()  # nothing recorded was lost
    assert not (sweep_dir / str(lost) / "result.json").exists()

    command = shlex.split(out.split("jobs without an ok result:\n", 1)[1].splitlines()[0].strip())
    assert command[:2] == ["python", str(REPO / "run.py")]
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "[sweep] 4 jobs: 3 skipped (an ok result of the same config), 1 in 1 slurm tasks" in resumed.stdout
    assert "[sweep] 4 jobs: 1 ok, 0 failed, 0 invalid, 3 skipped, 0 lost" in resumed.stdout
    assert len(rows(summary)) == 4  # the global log: every job ran exactly once
    assert (rows(sweep_dir / "summary.csv").status == "ok").sum() == 4


def test_preempted_task_is_requeued_and_resumes_at_its_first_unfinished_job(slurm, tmp_path):
    """Slurm sends USR2 before preempting a task or at its time limit (``--signal``); submitit then
    calls the task's ``checkpoint`` and requeues it with ``scontrol requeue``. (An ``scontrol requeue``
    from outside does not end a running step in this container: its proctrack/linuxproc cannot.)"""
    sweep_dir, summary = tmp_path / "sweep", tmp_path / "all.csv"
    args = [
        *SLURM,
        "hydra.launcher.jobs_per_task=3",
        "hydra.launcher.max_num_timeout=2",
        "accel.cache_interval=2,3,4",
        *SLOW,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_path={summary}",
    ]
    process = start_sweep(args, tmp_path)
    task = wait_for_progress(sweep_dir, done=1)
    subprocess.run(["scancel", "--signal=USR2", task["job_id"]], check=True)
    deadline = time.time() + 60
    while (
        "PENDING"
        not in subprocess.run(["squeue", "-h", "-o", "%T", "-j", task["job_id"]], capture_output=True, text=True).stdout
    ):
        assert time.time() < deadline, "the preempted task never came back to the queue"
        time.sleep(0.2)
    while _alive(task["pid"]):  # submitit exits the preempted process itself; let it go before the restart
        assert time.time() < deadline, "the preempted task's process did not exit"
        time.sleep(0.2)
    time.sleep(2)  # and its step's teardown
    subprocess.run(
        ["scontrol", "update", f"JobId={task['job_id']}", "StartTime=now"], check=True
    )  # skip Slurm's requeue delay
    code, out = finish(process, tmp_path)
    assert code == 0, out[-3000:]
    assert "[sweep] 3 jobs: 3 ok, 0 failed, 0 invalid, 0 skipped, 0 lost" in out
    (path,) = progress_files(sweep_dir)
    progress = json.loads(path.read_text())
    assert progress["starts"] == 2 and len(progress["done"]) == 3
    logged = rows(summary)
    assert len(logged) == 3 and logged.run_dir.is_unique  # no finished job ran twice
    logs = "".join(p.read_text() for p in SweepLayout(sweep_dir).submitit.glob("*/*_log.*"))
    assert "this job is preempted" in logs and "resumed (start 2)" in logs


def test_without_accounting_a_task_gone_from_the_queue_is_lost_after_the_grace_period(slurm, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        *SLURM,
        "hydra.launcher.jobs_per_task=2",
        "hydra.launcher.lost_after_s=3",
        "accel.cache_interval=2,3,4,5",
        *SLOW,
        f"hydra.sweep.dir={sweep_dir}",
        f"summary_path={tmp_path / 'all.csv'}",
    ]
    subprocess.run(["bash", str(SCRIPT), "stop-accounting"], check=True)  # our slurmdbd only
    try:
        assert subprocess.run(["sacct", "-n", "-X"], capture_output=True).returncode != 0  # no accounting now
        process = start_sweep(args, tmp_path)
        victim = wait_for_progress(sweep_dir, done=1)
        os.kill(victim["pid"], signal.SIGKILL)
        code, out = finish(process, tmp_path)
    finally:
        subprocess.run(["bash", str(SCRIPT), "start"], check=True, capture_output=True, timeout=300)
    assert code == 3, out[-3000:]
    assert "left the queue without a result (no accounting; waited 3 s)" in out
    assert "[sweep] 4 jobs: 3 ok, 0 failed, 0 invalid, 0 skipped, 1 lost" in out


def test_a_cluster_it_did_not_start_is_left_as_it_is(slurm):
    """Another Slurm on the machine (its own configuration, daemons, munge and database; here a second
    cluster under another prefix) keeps running, its files untouched, while ours starts, loses its
    accounting, starts again and is asked for its status."""
    prefix = Path(tempfile.mkdtemp(prefix="accel_bench_other_slurm_", dir="/var/lib"))  # munge and mysql must reach it
    prefix.chmod(0o755)
    other = {
        **os.environ,
        "ACCEL_BENCH_SLURM_PREFIX": str(prefix),
        "ACCEL_BENCH_SLURM_PORT_BASE": "17810",
        "ACCEL_BENCH_SLURM_CLUSTER": "other",
    }
    script = ["bash", str(SCRIPT)]
    try:
        started = subprocess.run([*script, "start"], env=other, capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        files = _files(prefix / "etc")
        for step in ("start", "stop-accounting", "start", "status"):
            subprocess.run([*script, step], check=True, capture_output=True, timeout=300)
        assert subprocess.run([*script, "status"], env=other, capture_output=True).returncode == 0
        assert _files(prefix / "etc") == files
    finally:
        subprocess.run([*script, "stop"], env=other, capture_output=True, timeout=120)
        shutil.rmtree(prefix, ignore_errors=True)
    assert subprocess.run([*script, "status"], capture_output=True).returncode == 0  # stopping that one left ours up
