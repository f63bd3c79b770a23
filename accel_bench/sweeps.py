"""Sweep jobs: resuming (an ok result of the same config is kept), progress, lost jobs, and what a
sweep's time went into."""

from __future__ import annotations

import csv
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

PLAN_FILE = "sweep_plan.json"  # written by the GridSweeper: every job's overrides
# A sweep job's outcome, the value its Hydra JobReturn carries. "lost": its task died (a lost node,
# scancel, the OOM killer, a time limit) before the job was recorded.
STATUSES = ("ok", "failed", "invalid", "skipped", "lost")
LOST_EXIT_CODE = 3  # a sweep that lost jobs ends with it, after its tally


def previous_ok(run_dir: Path, run_id: str) -> Optional[dict]:
    """The job's earlier row if it finished ok with this very config; a resumed sweep skips it."""
    path = Path(run_dir) / "result.json"
    if not path.exists():
        return None
    row = json.loads(path.read_text())["row"]
    return row if row["status"] == "ok" and row["run_id"] == run_id else None


def gpus_asked(launcher: Any) -> int:
    """GPUs per task that the job's launcher config asked for (none for the in-process launcher)."""
    gpus = launcher.get("gpus_per_node") if launcher is not None else None
    return gpus if isinstance(gpus, int) and not isinstance(gpus, bool) else 0


def where(host: Optional[str], device: Optional[str], device_name: Optional[str]) -> str:
    """``vm cuda:0 (NVIDIA H200)``: where a job ran, for its console line."""
    return f"{host or '?'} {device or '-'}" + (f" ({device_name})" if device_name else "")


def progress_line(sweep_dir: Path, summary_name: str, job_num: int, status: str, ran_on: str) -> str:
    """``[sweep] job 3 ok on vm cpu (AMD EPYC) | 7/12 jobs recorded in <sweep dir>/summary.csv``."""
    plan = Path(sweep_dir) / PLAN_FILE
    total = len(json.loads(plan.read_text())["jobs"]) if plan.exists() else "?"
    summary = Path(sweep_dir) / summary_name
    recorded = 0
    if summary.exists():
        with summary.open(newline="") as f:
            recorded = sum(1 for _ in csv.DictReader(f))
    return f"[sweep] job {job_num} {status} on {ran_on} | {recorded}/{total} jobs recorded in {summary}"


@dataclass(frozen=True)
class SweepCost:
    """The jobs a sweep ran (not the skipped ones): their wall time (each job's ``job_s``, which for
    a process's first job includes the process's start) and how much of it was measured pipeline calls."""

    jobs: int
    job_s: float
    measured_s: float
    pipeline_loads: int

    @property
    def measured_share(self) -> Optional[float]:
        return self.measured_s / self.job_s if self.job_s else None


def _number(value: str) -> float:
    return float(value) if value not in ("", None) else 0.0


def sweep_cost(summary: Path, since: str) -> SweepCost:
    """From ``<sweep dir>/summary.csv``: the rows of jobs that started at ``since`` (UTC ISO) or later.
    A reused baseline's measured time counts once, in the job that measured it."""
    rows: list[dict[str, str]] = []
    if Path(summary).exists():
        with Path(summary).open(newline="") as f:
            rows = [row for row in csv.DictReader(f) if row["timestamp"] >= since]
    measured = sum(_number(r["measured_s"]) + (0.0 if r["baseline_cached"] == "True" else _number(r["base_measured_s"])) for r in rows)
    loads = sum(1 for r in rows if _number(r["pipeline_load_s"]) > 0)
    return SweepCost(len(rows), sum(_number(r["job_s"]) for r in rows), measured, loads)


def resume_command(program: str, hydra_overrides: Sequence[str], task_overrides: Sequence[str], sweep_dir: Path) -> str:
    """The sweep's own command, pinned to its sweep dir: it runs the jobs without an ok result."""
    kept = [o for o in hydra_overrides if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
    return shlex.join(["python", program, "-m", *kept, *task_overrides, f"hydra.sweep.dir={sweep_dir}"])
