"""Sweep jobs: one job as a Hydra task, resuming (an ok result of the same config is kept), progress,
lost jobs, what a sweep's time went into, and undoing what a launch refused before anything ran wrote."""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ..errors import ConfigError, is_integer
from ..record import Row, SummaryError, read_result, read_rows
from .layout import SweepLayout

# A sweep job's outcome, the value its Hydra JobReturn carries. "lost": its task died (a lost node,
# scancel, the OOM killer, a time limit) before the job was recorded.
STATUSES = ("ok", "failed", "invalid", "skipped", "lost")
LOST_EXIT_CODE = 3  # a sweep that lost jobs ends with it, after its tally


def entries(folder: Path) -> Optional[set[Path]]:
    """What ``folder`` holds (None: it does not exist), for ``remove_new``."""
    return set(folder.iterdir()) if folder.is_dir() else None


def remove_new(folder: Path, before: Optional[set[Path]]) -> None:
    """Undo what a launch refused before anything ran wrote: the entries of ``folder`` not in ``before``
    (``entries`` then), and the folder itself where it did not exist then."""
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for path in entries(folder) or set():
        if path in before:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def previous_ok(run_dir: Path, run_id: str) -> Optional[Row]:
    """The job's earlier row if it finished ok with this very config; a resumed sweep skips it."""
    row = read_result(run_dir)
    return row if row is not None and row.status == "ok" and row.run_id == run_id else None


def replaced_jobs(layout: SweepLayout, jobs: Sequence[Sequence[str]], search: bool = False) -> list[int]:
    """The numbered job folders holding a result that this sweep (its ``jobs``; a search's candidates)
    would run other overrides into, replacing that result and its summary row. A grid job keeps its
    number, so a grid's folder compares plans job by job (the order of a job's overrides aside); a
    search numbers its jobs as it launches them, so a grid's and a search's folders never mix, and a
    search's own folder is its ledger's to check."""
    if not layout.plan.exists():
        return []
    before = json.loads(layout.plan.read_text())
    if before.get("search", False) != search:
        return [num for num in layout.job_numbers if read_result(layout.job(num)) is not None]
    if search:
        return []
    return [
        num
        for num, job in enumerate(before["jobs"][: len(jobs)])
        if sorted(job) != sorted(jobs[num]) and read_result(layout.job(num)) is not None
    ]


def check_sweep_dir(layout: SweepLayout, jobs: Sequence[Sequence[str]], search: bool = False) -> None:
    """Refuses a sweep folder whose recorded results this sweep would replace (``replaced_jobs``), or
    whose summary does not read back (every job's progress line and the tally read it)."""
    try:
        read_rows(layout.summary)
    except SummaryError as error:
        raise ConfigError(
            "hydra.sweep.dir", str(layout.root), f"a sweep folder whose summary reads back: {error}"
        ) from None
    replaced = replaced_jobs(layout, jobs, search)
    if replaced:
        raise ConfigError(
            "hydra.sweep.dir",
            str(layout.root),
            f"a folder of this sweep's own: job(s) {', '.join(map(str, replaced))} there hold results of "
            f"other overrides ({layout.plan.name}); the same overrides resume that sweep",
        )


def sweep_job(cfg: Any, hydra_cfg: Any) -> str:
    """One job of a sweep, as Hydra's task: skipped when the job already has an ok result of the same
    config, else run into the sweep folder; returns the job's status for the sweep's tally."""
    from ..console import format_summary
    from ..experiment import run, run_id

    run_dir, layout, job_num = (
        Path(hydra_cfg.runtime.output_dir),
        SweepLayout(Path(hydra_cfg.sweep.dir)),
        hydra_cfg.job.num,
    )
    row = previous_ok(run_dir, run_id(cfg))
    if row is not None:
        status = "skipped"
    else:
        row = run(cfg, run_dir, layout.root, gpus_asked(hydra_cfg.launcher))
        print(format_summary(row, cfg.summary_path), flush=True)
        status = row.status
    shown = f"{status} (disturbed)" if row.disturbed else status
    print(progress_line(layout, job_num, shown, where(row.host, row.device, row.device_name)), flush=True)
    return status


def gpus_asked(launcher: Any) -> int:
    """GPUs per task that the job's launcher config asked for (none for the in-process launcher)."""
    gpus = launcher.get("gpus_per_node") if launcher is not None else None
    return gpus if is_integer(gpus) else 0


def where(host: Optional[str], device: Optional[str], device_name: Optional[str]) -> str:
    """``vm cuda:0 (NVIDIA H200)``: where a job ran, for its console line."""
    return f"{host or '?'} {device or '-'}" + (f" ({device_name})" if device_name else "")


def progress_line(layout: SweepLayout, job_num: int, status: str, ran_on: str) -> str:
    """``[sweep] job 3 ok on vm cpu (AMD EPYC) | 7/12 jobs recorded in <sweep dir>/summary.csv``."""
    total = len(json.loads(layout.plan.read_text())["jobs"]) if layout.plan.exists() else "?"
    return f"[sweep] job {job_num} {status} on {ran_on} | {len(read_rows(layout.summary))}/{total} jobs recorded in {layout.summary}"


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


def sweep_cost(layout: SweepLayout, since: str) -> SweepCost:
    """From the sweep's summary: the rows of jobs that started at ``since`` (UTC ISO) or later. A
    reused baseline's measured time counts once, in the job that measured it."""
    rows = [row for row in read_rows(layout.summary) if row.timestamp >= since]
    measured = sum(
        (r.accelerated.measured_s or 0.0) + (0.0 if r.baseline_cached else r.base.measured_s or 0.0) for r in rows
    )
    loads = sum(1 for r in rows if (r.pipeline_load_s or 0.0) > 0)
    return SweepCost(len(rows), sum(r.job_s or 0.0 for r in rows), measured, loads)


def disturbed_rows(layout: SweepLayout, since: str) -> list[Row]:
    """The ok rows of jobs that started at ``since`` or later whose figures were disturbed."""
    return [r for r in read_rows(layout.summary) if r.timestamp >= since and r.status == "ok" and r.disturbed]


def resume_command(program: str, hydra_overrides: Sequence[str], task_overrides: Sequence[str], sweep_dir: Path) -> str:
    """The sweep's own command, pinned to its sweep dir: it runs the jobs without an ok result."""
    kept = [o for o in hydra_overrides if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
    return shlex.join(["python", program, "-m", *kept, *task_overrides, f"hydra.sweep.dir={sweep_dir}"])
