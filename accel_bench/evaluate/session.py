"""One comparison: a baseline file and the files measured against it, each in its own sandboxed
process, their passes interleaved on the same fresh inputs, re-measured while a verdict is open."""

from __future__ import annotations

import gc
import os
import secrets
import statistics
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..measure import FreshInputs, WarmupPolicy, measure, measure_sides, pass_speedups
from ..watch.checks import PassCheck, Watch
from ..watch.device import DeviceWatch
from ..watch.drain import Drain
from ..watch.host import HostWatch
from .protocol import CodeProcess, Exchange, Failure
from .sandbox import SandboxInfo
from .verdicts import watched_verdict

TRUSTED_DEVICE = torch.device("cpu")  # the trusted side only waits for bytes: nothing of its own to synchronize


@dataclass(frozen=True)
class SideSpec:
    """A file to measure and the targets its verdicts are taken against (a shared ground truth has several)."""

    label: str
    path: Path
    steps: Optional[int]
    targets: tuple[float, ...] = ()
    set_steps: bool = False  # run the file at ``steps`` even where it declares its own (a fewer-steps reference)


@dataclass
class SideResult:
    spec: SideSpec
    failure: Optional[Failure] = None
    pass_latencies_s: list[float] = field(default_factory=list)  # seconds per image, per measured pass
    warmup_batches: int = 0
    measured: list[Exchange] = field(default_factory=list)  # every measured batch, in order
    round_trip_s: Optional[float] = None  # a batch's transfer alone (median of the echo batches)
    batch_time_s: Optional[float] = None  # median measured batch
    peak_rss_gb: float = 0.0
    checks: list[PassCheck] = field(default_factory=list)  # per measured pass: what the watches saw
    passes_asked: int = 0  # clean pairs a verdict needs (the session's ``repeats``)
    isolation: str = "cpu"  # other work on the GPU: checked | unchecked: <why> | cpu
    warmup_stable: Optional[bool] = None

    def clean(self, repeat: int) -> bool:
        """Pass ``repeat`` was clean (a pass nothing watched counts as clean)."""
        return repeat >= len(self.checks) or self.checks[repeat].clean


@dataclass
class Settings:
    model_id: str
    resolution: int
    batch_size: int
    device: str
    dtype: str
    seed: int
    warmup: WarmupPolicy
    repeats: int
    max_repeats: int
    timeout_s: float


def launch(spec: SideSpec, settings: Settings, info: SandboxInfo) -> tuple[SideResult, Optional[CodeProcess]]:
    result = SideResult(spec)
    if not spec.path.is_file():
        result.failure = Failure("missing", f"missing file {spec.path}")
        return result, None
    request = {
        "code_path": str(spec.path.resolve()),
        "model_id": settings.model_id,
        "steps": spec.steps,
        "set_steps": spec.set_steps,
        "resolution": settings.resolution,
        "device": settings.device,
        "dtype": settings.dtype,
        "seed": settings.seed,
    }
    readable = [str(spec.path.resolve()), settings.model_id]
    return result, CodeProcess.launch(spec.label, info, request, readable, settings.timeout_s)


def _open(processes: dict[str, CodeProcess], labels: Sequence[str]) -> list[str]:
    return [label for label in labels if label in processes and processes[label].failure is None]


def run(
    sides: Sequence[SideSpec],
    settings: Settings,
    info: SandboxInfo,
    prompts: list[str],
    input_seed: Optional[int] = None,
) -> tuple[dict[str, SideResult], int]:
    """Measure ``sides`` (the first is the baseline) and return their results and the input seed used."""
    secret = secrets.randbits(62) if input_seed is None else input_seed
    results: dict[str, SideResult] = {}
    processes: dict[str, CodeProcess] = {}
    try:
        for spec in sides:  # every file loads at once; each is frozen once loaded
            results[spec.label], process = launch(spec, settings, info)
            if process is not None:
                processes[spec.label] = process
        for label, process in processes.items():
            if process.ready():
                process.sandbox.freeze()
            else:
                results[label].failure = process.failure
        baseline = sides[0].label
        labels = _open(processes, [s.label for s in sides])
        if baseline not in labels:
            return results, secret
        watches = _watches(processes, settings)
        with _no_collector_pauses():
            _measure(
                labels,
                results,
                processes,
                settings,
                prompts,
                FreshInputs(secret),
                settings.warmup,
                settings.repeats,
                watches,
            )
            open_verdicts = [s.label for s in sides[1:] if _inconclusive(results, baseline, s)]
            done = len(results[baseline].pass_latencies_s)
            extra = settings.max_repeats - done
            if open_verdicts and extra > 0 and results[baseline].failure is None:
                labels = _open(processes, [baseline, *open_verdicts])
                _measure(
                    labels,
                    results,
                    processes,
                    settings,
                    prompts,
                    FreshInputs(secret, done),
                    WarmupPolicy(0),
                    extra,
                    watches,
                )
            for label in _open(processes, [s.label for s in sides]):
                _transfer_cost(results[label], processes[label], settings, prompts)
    finally:
        for label, process in processes.items():
            results[label].peak_rss_gb = process.sandbox.peak_rss_gb
            process.close()
    return results, secret


@contextmanager
def _no_collector_pauses():
    """The trusted side's garbage collector stays off while it times round trips: a collection is
    its own cost, and (being deterministic in allocations) it would land on the same side's pass
    every time. Reference counting still frees the transcripts' buffers as they go."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _measure(
    labels: list[str],
    results: dict[str, SideResult],
    processes: dict[str, CodeProcess],
    settings: Settings,
    prompts: list[str],
    fresh: FreshInputs,
    warmup: WarmupPolicy,
    repeats: int,
    watches: dict[str, Watch],
) -> None:
    """``repeats`` interleaved passes (more, up to the session's cap, while some are not clean)."""
    starts = {label: len(processes[label].transcript) for label in labels}
    measurements = measure_sides(
        [processes[label].turn for label in labels],
        prompts,
        batch_size=settings.batch_size,
        seed=fresh.secret,
        warmup=warmup,
        device=TRUSTED_DEVICE,
        repeats=repeats,
        max_repeats=settings.max_repeats - len(results[labels[0]].pass_latencies_s),
        interleave=True,
        count_flops=False,
        labels=labels,
        fresh=fresh,
        watches=[watches[label] for label in labels],
    )
    for label, measurement in zip(labels, measurements):
        result, process = results[label], processes[label]
        if measurement is None:
            result.failure = process.failure
            continue
        first = starts[label] + measurement.warmup_batches
        result.warmup_batches += measurement.warmup_batches
        result.measured += process.transcript[first:]
        result.pass_latencies_s += measurement.repeat_latencies_s
        result.checks += measurement.checks
        result.batch_time_s = measurement.batch_time_median_s
        result.passes_asked = settings.repeats
        result.isolation = measurement.isolation
        if measurement.warmup_batches:
            result.warmup_stable = measurement.warmup_stable


def _watches(processes: dict[str, CodeProcess], settings: Settings) -> dict[str, Watch]:
    """Each side's process watched from the trusted side: its threads' run-queue wait (read from the
    kernel, not from the process), other GPU work than the session's, and, on a GPU, the work it left
    queued, waited out by the trusted side's own probe and charged to it."""
    device = torch.device(settings.device)

    def session_pids() -> list[int]:
        return [os.getpid(), *(pid for p in processes.values() for pid in p.sandbox.members())]

    drain = Drain(device) if device.type == "cuda" else None
    gpu = DeviceWatch(device, session_pids)
    return {label: Watch(HostWatch(process.sandbox.members), gpu, drain) for label, process in processes.items()}


def watched_pairs(base: SideResult, side: SideResult) -> tuple[list[int], list[int]]:
    """(the pass pairs whose baseline pass was clean, those of them whose candidate pass was clean too)."""
    count = min(len(base.pass_latencies_s), len(side.pass_latencies_s))
    kept = [r for r in range(count) if base.clean(r)]
    return kept, [r for r in kept if side.clean(r)]


def verdict_passes(base: SideResult, side: SideResult) -> list[int]:
    """The pass pairs a side's speed is taken over: clean on both sides, else baseline-clean, else all."""
    kept, clean = watched_pairs(base, side)
    return clean or kept or list(range(min(len(base.pass_latencies_s), len(side.pass_latencies_s))))


def disturbance(label: str, side: SideResult) -> list[str]:
    """``label: cause, ...`` for what made any of ``side``'s measured passes not clean (empty if none did)."""
    causes = sorted({cause for c in side.checks if not c.clean for cause in c.causes()})
    return [f"{label}: {', '.join(causes)}"] if causes else []


def ratios(base: SideResult, side: SideResult, passes: Sequence[int]) -> list[float]:
    """Per-pass speedups: pass r of the baseline over pass r of the side (both saw the same inputs)."""
    return pass_speedups([base.pass_latencies_s[r] for r in passes], [side.pass_latencies_s[r] for r in passes])


def _inconclusive(results: dict[str, SideResult], baseline: str, spec: SideSpec) -> bool:
    side, base = results[spec.label], results[baseline]
    if side.failure is not None or not side.pass_latencies_s:
        return False
    kept, clean = watched_pairs(base, side)
    return any(
        watched_verdict(ratios(base, side, clean), ratios(base, side, kept), target, side.passes_asked)[0]
        == "inconclusive"
        for target in spec.targets
    )


def _transfer_cost(result: SideResult, process: CodeProcess, settings: Settings, prompts: list[str]) -> None:
    """What a round trip costs without the work: the same bytes, through the same ``measure``."""
    with process.turn():
        echoed = measure(
            process.echo,
            prompts,
            batch_size=settings.batch_size,
            seed=0,
            warmup_batches=1,
            device=TRUSTED_DEVICE,
            count_flops=False,
            label=f"{result.spec.label} transfer",
        )
    if echoed is None:
        result.failure = process.failure  # it answered the echo with the wrong bytes
    else:
        result.round_trip_s = statistics.median(echoed.batch_times_s)
