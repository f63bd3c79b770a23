"""What each numeric launcher setting allows beyond its type, in one table: the launcher's own check and
the command line's type check (``hydra.launcher.nodes=true``, which Hydra refuses before any launcher
runs) say the same thing about the same key."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..errors import ConfigError, is_integer, is_number


@dataclass(frozen=True)
class Limit:
    """A setting's lowest value; ``above``: strictly above it; ``nullable``: null is allowed too."""

    lowest: float
    integer: bool = True
    above: bool = False
    nullable: bool = False
    unit: str = ""  # seconds: said instead of "a number"
    meaning: str = ""  # said after the bound, in brackets

    @property
    def allowed(self) -> str:
        kind = "an integer" if self.integer else self.unit or "a number"
        bound = f"{kind} {'>' if self.above else '>='} {self.lowest:g}"
        return ("null or " if self.nullable else "") + bound + (f" ({self.meaning})" if self.meaning else "")

    def holds(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if not (is_integer(value) if self.integer else is_number(value)):
            return False
        return value > self.lowest if self.above else value >= self.lowest


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


def launcher_allows(key: str) -> Optional[str]:
    """What ``key`` (a full key, ``hydra.launcher.nodes``) allows, where the table knows it."""
    limit = LIMITS.get(key[len(_PREFIX) :]) if key.startswith(_PREFIX) else None
    return limit.allowed if limit is not None else None


def check_launcher_values(values: dict, keys: tuple) -> None:
    """ConfigError for the first of ``keys`` whose value in ``values`` its limit does not hold."""
    for key in keys:
        limit = LIMITS[key]
        if not limit.holds(values.get(key)):
            raise ConfigError(_PREFIX + key, values.get(key), limit.allowed)
