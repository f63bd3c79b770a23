"""What the watches saw, per batch and per pass of one side, and the one rule for a clean pass."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Optional, Sequence

from .compiles import CompileWatch, compiled_words
from .device import DeviceWatch, Foreign, busiest
from .drain import Drain
from .host import CONTENDED_WAIT_SHARE, HostWatch
from .outliers import outliers


@dataclass
class PassCheck:
    """One measured pass of one side."""

    wait_shares: list[Optional[float]] = field(default_factory=list)  # per batch: run-queue wait / wall
    foreign: list[Foreign] = field(default_factory=list)  # processes that used the GPU during the pass
    leftover_s: float = 0.0  # the side's queued GPU work after the pass, waited out and charged to it
    leftover_drained: bool = True  # False: still busy after drain.TIMEOUT_S
    outliers: list[int] = field(default_factory=list)  # indices of outlying batches within the pass
    compilations: dict[str, int] = field(default_factory=dict)  # inside its batches, by kind (watch.compiles)

    @classmethod
    def from_json(cls, values: dict) -> "PassCheck":
        """Back from ``dataclasses.asdict`` (a baseline shared on disk keeps its checks). What another
        version wrote and this one does not know is ignored; what it did not write keeps its default."""
        known = {f.name for f in fields(cls)}
        kept = {name: value for name, value in values.items() if name in known}
        return cls(**{**kept, "foreign": [Foreign(**f) for f in values.get("foreign", [])]})

    @property
    def contended(self) -> int:
        return sum(w is not None and w > CONTENDED_WAIT_SHARE for w in self.wait_shares)

    @property
    def clean(self) -> bool:
        return not (self.contended or self.foreign or self.outliers or self.compilations or not self.leftover_drained)

    def causes(self) -> list[str]:
        found = []
        if self.outliers:
            found.append("outlier batch")
        if self.contended:
            found.append("busy host")
        if self.foreign:
            found.append("other GPU work: " + ", ".join(map(str, busiest(self.foreign))))
        if not self.leftover_drained:
            found.append("its GPU work did not drain")
        if self.compilations:
            found.append("compiled: " + compiled_words(self.compilations))
        return found


class Watch:
    """The watches around one side's batches and passes; ``drain`` only where the side runs in another
    process (the evaluator), since a synchronize in our own process already waits for our own work."""

    def __init__(
        self,
        host: HostWatch,
        device: DeviceWatch,
        drain: Optional[Drain] = None,
        compiles: Optional[CompileWatch] = None,
    ):
        self.host, self.device, self.drain = host, device, drain
        self.compiles = compiles or CompileWatch()

    @property
    def isolation(self) -> str:
        return self.device.isolation

    def settle(self, check: PassCheck) -> None:
        """After the side's pass (its process frozen): wait out its queued GPU work and charge it."""
        if self.drain is not None:
            check.leftover_s, check.leftover_drained = self.drain.until_idle()


def mark_outliers(checks: Sequence[PassCheck], times_s: Sequence[float], sizes: Sequence[int]) -> None:
    """Judge every measured batch of a side against the side's others (``outliers``), pass by pass."""
    flagged = set(outliers(times_s, sizes))
    first = 0
    for check in checks:
        count = len(check.wait_shares)
        check.outliers = [i - first for i in range(first, first + count) if i in flagged]
        first += count
