"""What each numeric launcher setting allows beyond its type, in one table (half of them are fields of
submitit's config dataclasses, which carry no limits): the launcher's own check and the command line's type
check (``hydra.launcher.nodes=true``, which Hydra refuses before any launcher runs) say the same thing
about the same key."""

from __future__ import annotations

from typing import Optional

from ..limits import Limit, check_values

# hydra.launcher.<key>: ours (jobs_per_task, parallel, poll_s, lost_after_s), then submitit's resources that
# sbatch would refuse in a traceback
LIMITS = {
    "jobs_per_task": Limit(1, meaning="jobs one task runs in one process"),
    "parallel": Limit(1, meaning="CPU tasks at a time"),
    "poll_s": Limit(0, integer=False, above=True, unit="seconds"),
    "lost_after_s": Limit(0, integer=False, unit="seconds"),
    "timeout_min": Limit(1),
    "nodes": Limit(1),
    "tasks_per_node": Limit(1),
    "cpus_per_task": Limit(1, nullable=True),
    "gpus_per_node": Limit(0, nullable=True),
    "array_parallelism": Limit(1),
    "max_num_timeout": Limit(0),
    "mem_gb": Limit(0, integer=False, above=True, nullable=True),
}

_PREFIX = "hydra.launcher."


def launcher_limit(key: str) -> Optional[Limit]:
    """The limit on ``key`` (a full key, ``hydra.launcher.nodes``), where the table knows it."""
    return LIMITS.get(key[len(_PREFIX) :]) if key.startswith(_PREFIX) else None


def check_launcher_values(values: dict, keys: tuple) -> None:
    """ConfigError for the first of ``keys`` whose value in ``values`` its limit does not hold."""
    check_values(values, {key: LIMITS[key] for key in keys}, _PREFIX)
