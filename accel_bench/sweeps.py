"""Sweep jobs: resuming (an ok result of the same config is kept) and progress over the sweep."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Optional

PLAN_FILE = "sweep_plan.json"  # written by the GridSweeper: every job's overrides
STATUSES = ("ok", "failed", "invalid", "skipped")  # a sweep job's return value


def previous_ok(run_dir: Path, run_id: str) -> Optional[dict]:
    """The job's earlier row if it finished ok with this very config; a resumed sweep skips it."""
    path = Path(run_dir) / "result.json"
    if not path.exists():
        return None
    row = json.loads(path.read_text())["row"]
    return row if row["status"] == "ok" and row["run_id"] == run_id else None


def progress_line(sweep_dir: Path, summary_name: str, job_num: int, status: str) -> str:
    """``[sweep] job 3 skipped | 7/12 jobs recorded in <sweep dir>/summary.csv``."""
    plan = Path(sweep_dir) / PLAN_FILE
    total = len(json.loads(plan.read_text())["jobs"]) if plan.exists() else "?"
    summary = Path(sweep_dir) / summary_name
    recorded = 0
    if summary.exists():
        with summary.open(newline="") as f:
            recorded = sum(1 for _ in csv.DictReader(f))
    return f"[sweep] job {job_num} {status} | {recorded}/{total} jobs recorded in {summary}"
