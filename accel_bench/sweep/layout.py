"""The sweep folder: every file name in it, known here only.

<sweep dir>/summary.csv          one row per job (upserted: a resumed sweep keeps one row a job)
<sweep dir>/sweep_plan.json      every job's overrides, written by the grid sweeper
<sweep dir>/baselines/           baselines shared by the sweep's jobs, keyed
<sweep dir>/<job num>/           each job's run folder (Hydra's subdir), its row in record.RESULT_FILE
<sweep dir>/.submitit/           submitit's job folders; tasks/<launch>-<task>.json each task's progress
<sweep dir>/search/              a search's state: study.log (Optuna's journal), jobs.json (job -> candidate, stage)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SweepLayout:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def summary(self) -> Path:
        return self.root / "summary.csv"

    @property
    def plan(self) -> Path:
        return self.root / "sweep_plan.json"

    @property
    def baselines(self) -> Path:
        return self.root / "baselines"

    def job(self, num: int) -> Path:
        return self.root / str(num)

    @property
    def job_numbers(self) -> list[int]:
        """The numbers of the job folders there are, sorted."""
        return sorted(int(p.name) for p in self.root.iterdir() if p.is_dir() and p.name.isdigit())

    @property
    def search_journal(self) -> Path:
        return self.root / "search" / "study.log"

    @property
    def search_ledger(self) -> Path:
        return self.root / "search" / "jobs.json"

    @property
    def submitit(self) -> Path:
        return self.root / ".submitit"

    def task_progress(self, launch: str, task: int) -> Path:
        return self.submitit / "tasks" / f"{launch}-{task:04d}.json"

    @property
    def task_progress_files(self) -> list[Path]:
        return sorted((self.submitit / "tasks").glob("*.json"))
