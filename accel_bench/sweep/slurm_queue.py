"""What Slurm says of submitted tasks: whether each is still queued (``squeue``, always there) and,
where the cluster keeps accounting, the state it ended in (``sacct``).

A task that left the queue without writing its result is lost. With accounting, its final state
(CANCELLED, NODE_FAIL, OUT_OF_MEMORY, TIMEOUT, ...) says so at once; without it, the launcher waits
a grace period for a late result file (shared file systems lag) before declaring the task lost.
"""

from __future__ import annotations

import subprocess
from typing import Iterable, Optional

# States in which a task is over (sacct); PREEMPTED and REQUEUED tasks come back to the queue.
ENDED = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT")


def _array_ids(task_ids: Iterable[str]) -> list[str]:
    return sorted({task_id.split("_")[0] for task_id in task_ids})


def queued(task_ids: Iterable[str]) -> Optional[set[str]]:
    """The tasks still in the queue (pending, running, requeued), one id per array element; None when
    squeue itself fails (the controller not answering), so that nothing is declared lost on it."""
    ids = _array_ids(task_ids)
    if not ids:
        return set()
    try:
        out = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(ids)], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # squeue exits 1 with "Invalid job id specified" once every listed job has left the queue
        return set() if "Invalid job id" in out.stderr else None
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def ended_states(task_ids: Iterable[str]) -> Optional[dict[str, str]]:
    """The final state of each task that has ended, from accounting; None where the cluster keeps
    none (sacct fails), so the caller falls back to the grace period."""
    ids = _array_ids(task_ids)
    if not ids:
        return {}
    try:
        out = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(ids)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    states: dict[str, str] = {}
    for line in out.stdout.splitlines():
        task_id, _, state = line.partition("|")
        state = state.split()[0] if state.strip() else ""
        if "[" not in task_id and state in ENDED:  # "12_[3-5]" is a range still pending
            states[task_id] = state
    return states
