"""The one timing path: every speed number in accel_bench comes from ``measure_sides``.

Fair by construction: prompts go in batches of ``batch_size``; each prompt has its own CPU
generator seeded from (seed, prompt index), so an image does not depend on how prompts are
batched; warm-up batches use the same generators, which are made anew for the measured
batches; on a GPU ``torch.cuda.synchronize()`` brackets every timed batch.

Numbers that hold on a noisy GPU: warm-up can run until two consecutive batch times agree
(``warmup="auto"``; a smaller last batch once too, so its shape is not first met in a pass; with
``interleave`` in the order the sides will be measured, so a side re-opened after another is warm
too); the prompt set is measured ``repeats`` times and every figure keeps its
spread; with ``interleave`` the sides' passes alternate (A B A B ...), so drift hits both alike.
Every batch and pass is watched (``accel_bench.watch``): a pass with a contended batch, an outlying
batch or other work on the GPU is not clean, and is measured again, up to ``max_repeats`` passes.

Code that may replay outputs (the evaluator's candidates) gets ``FreshInputs``: every warm-up batch
and every pass has its own per-image seeds and prompt order, drawn from a secret, the same on every
side pass for pass.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, shape_wrapper
from tqdm.auto import tqdm

from .watch.checks import PassCheck, Watch, mark_outliers
from .watch.device import DeviceWatch
from .watch.host import HostWatch

# generate(prompts, generators) -> images as float arrays in [0, 1], shape (batch, height, width, 3)
Generate = Callable[[list[str], list[torch.Generator]], np.ndarray]
# before_batch(seed): put stateful accelerators into a state fixed by the batch's seed
BeforeBatch = Optional[Callable[[int], None]]
# a side of a comparison, opened for each of its passes (accelerators applied, then removed)
SideOpener = Callable[[], ContextManager[tuple[Generate, BeforeBatch]]]


def prompt_seed(seed: int, index: int) -> int:
    """A per-prompt seed that depends only on (seed, index), never on batching."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def prompt_generators(seed: int, start: int, count: int) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(prompt_seed(seed, start + i)) for i in range(count)]


@dataclass(frozen=True)
class FreshInputs:
    """No input seen twice: warm-up batch k and pass r each get seeds and a prompt order drawn from
    ``secret``, ``first_pass`` numbering the passes of a call (a re-measure continues the count)."""

    secret: int
    first_pass: int = 0

    def draw(self, phase: int, index: int) -> tuple[int, np.ndarray]:
        """(the seed of a warm-up batch (phase 0) or a pass (phase 1), a permutation source)."""
        sequence = np.random.SeedSequence([self.secret, phase, self.first_pass, index])
        return int(sequence.generate_state(1, dtype=np.uint64)[0] >> 1), sequence


class SideStopped(Exception):
    """Raised by a side's ``generate`` when that side cannot go on (its process died, it broke the
    protocol): the side is dropped from the rest of the measurement, the others go on."""


@dataclass(frozen=True)
class WarmupPolicy:
    """``batches``: a fixed count, or "auto": until two consecutive full-batch times agree within
    ``tolerance`` (relative), at most ``max_batches``. ``inherited``: the process is warm already
    (its GPU's clocks, allocator and kernels from the passes it just measured), so one batch pays
    the side's own first-call costs and ``batches`` is not applied."""

    batches: Union[int, str] = 1
    tolerance: float = 0.02
    max_batches: int = 10
    inherited: bool = False


@dataclass
class Measurement:
    """One side of a comparison; every figure names its unit and its denominator."""

    batch_times_s: list[float]  # seconds per measured batch, all repeats in order
    batch_sizes: list[int]  # images per measured batch, same order
    repeats: int  # passes over the prompt set
    warmup_times_s: list[float]  # seconds per warm-up batch (synchronized like the measured ones)
    peak_mem_gb: Optional[float]  # torch.cuda.max_memory_allocated over the measured batches; None on CPU
    flops_per_image: Optional[float]  # GFLOP per image, counted on one untimed call; None when not counted
    images: np.ndarray = field(repr=False)  # (num_images, H, W, 3) floats in [0, 1], first pass, in its prompt order
    flops_s: Optional[float] = None  # seconds the FLOPs count took (its call runs under a counting mode, untimed)
    checks: list[PassCheck] = field(default_factory=list)  # per pass: what the watches saw
    warmup_stable: Optional[bool] = None  # auto warm-up: two batches agreed (False: it stopped at its cap)
    isolation: str = "cpu"  # the device watch's verdict: checked | unchecked: <why> | cpu
    warmup_inherited: bool = False  # warmed up with one batch in a process already warm (WarmupPolicy.inherited)
    flops_inherited: bool = False  # flops_per_image from an earlier side of the same setting (not counted here)
    flops_eager: bool = (
        False  # flops_per_image of the side without its same-arithmetic methods (compile, quantization, ...)
    )
    warmup_counted: bool = False  # its first warm-up batch ran under the FLOPs count (its seconds: flops_s)

    @property
    def warmup_batches(self) -> int:
        """Warm-up batches run: the timed ones and the FLOPs-counting one."""
        return len(self.warmup_times_s) + self.warmup_counted

    @property
    def measured_s(self) -> float:
        """Seconds inside measured batches, all repeats."""
        return sum(self.batch_times_s)

    @property
    def num_images(self) -> int:
        """Images per pass over the prompt set."""
        return sum(self.batch_sizes) // self.repeats

    def pass_batch_times_s(self, repeat: int) -> list[float]:
        per_pass = len(self.batch_times_s) // self.repeats
        return self.batch_times_s[repeat * per_pass : (repeat + 1) * per_pass]

    @property
    def repeat_latencies_s(self) -> list[float]:
        """Seconds per image of each pass run: the pass's measured time, and any queued work it left
        that was waited out after it, over its images."""
        leftover = [c.leftover_s for c in self.checks] or [0.0] * self.repeats
        return [(sum(self.pass_batch_times_s(r)) + leftover[r]) / self.num_images for r in range(self.repeats)]

    @property
    def clean_passes(self) -> list[int]:
        """Passes the watches found nothing in (all passes where nothing was watched)."""
        return [r for r in range(self.repeats) if not self.checks or self.checks[r].clean]

    @property
    def latency_s(self) -> float:
        """Seconds per image: the median over repeats."""
        return statistics.median(self.repeat_latencies_s)

    @property
    def batch_time_median_s(self) -> float:
        return statistics.median(self.batch_times_s)

    @property
    def batch_time_min_s(self) -> float:
        return min(self.batch_times_s)

    @property
    def batch_time_max_s(self) -> float:
        return max(self.batch_times_s)


def pass_speedups(base_latencies_s: Sequence[float], latencies_s: Sequence[float]) -> list[float]:
    """Per-pass speedups, pairing pass r of each side (the pairs of an interleaved run): every speedup
    accel_bench reports, a run's or a verdict's, is made of these."""
    return [b / a for b, a in zip(base_latencies_s, latencies_s)]


def paired_passes(base: Measurement, side: Measurement, interleaved: bool) -> tuple[list[int], list[int]]:
    """The passes a comparison is taken over: those clean on both sides (pass r with pass r when the
    passes alternated; in order otherwise), or every pass where not one pair is clean, which the row
    then reports as disturbed."""
    if interleaved:
        both = [r for r in base.clean_passes if r in side.clean_passes]
        pairs = (both, both)
    else:
        count = min(len(base.clean_passes), len(side.clean_passes))
        pairs = (base.clean_passes[:count], side.clean_passes[:count])
    if not pairs[0]:
        count = min(base.repeats, side.repeats)
        return list(range(count)), list(range(count))
    return pairs


def speedup_ratios(base: Measurement, accel: Measurement, interleaved: bool = False) -> list[float]:
    base_passes, accel_passes = paired_passes(base, accel, interleaved)
    return pass_speedups(
        [base.repeat_latencies_s[r] for r in base_passes], [accel.repeat_latencies_s[r] for r in accel_passes]
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Runner:
    """Batches of one pass over the prompts, timed the one way."""

    def __init__(
        self,
        prompts: Sequence[str],
        batch_size: int,
        seed: int,
        device: torch.device,
        fresh: Optional[FreshInputs] = None,
    ):
        self.prompts, self.batch_size, self.seed, self.device, self.fresh = (
            list(prompts),
            batch_size,
            seed,
            device,
            fresh,
        )
        self.starts = list(range(0, len(self.prompts), batch_size))
        full = [s for s in self.starts if s + batch_size <= len(self.prompts)]
        self.full_starts = full or self.starts
        # the smaller last batch beside full ones: a shape of its own (a compiled side compiles it)
        self.short_start = self.starts[-1] if full and len(full) < len(self.starts) else None

    def drawn(self, phase: int, index: int) -> "_Runner":
        """This runner for one warm-up batch or pass: itself, or with fresh seeds and prompt order."""
        if self.fresh is None:
            return self
        seed, sequence = self.fresh.draw(phase, index)
        order = np.random.default_rng(sequence).permutation(len(self.prompts))
        return _Runner([self.prompts[i] for i in order], self.batch_size, seed, self.device)

    def prepare(
        self, before_batch: BeforeBatch, start: int, size: Optional[int] = None
    ) -> tuple[list[str], list[torch.Generator]]:
        """The batch's prompts and fresh generators; stateful accelerators reset. Never timed."""
        batch = self.prompts[start : start + (size or self.batch_size)]
        if before_batch is not None:
            before_batch(prompt_seed(self.seed, start))
        return batch, prompt_generators(self.seed, start, len(batch))

    def run(self, generate: Generate, before_batch: BeforeBatch, start: int, size: Optional[int] = None) -> np.ndarray:
        return generate(*self.prepare(before_batch, start, size))

    def timed(
        self, generate: Generate, before_batch: BeforeBatch, start: int, host: Optional[HostWatch] = None
    ) -> tuple[float, np.ndarray, Optional[float]]:
        """(seconds, images, the share of those seconds the host made the work wait for a CPU)."""
        batch, generators = self.prepare(before_batch, start)
        _synchronize(self.device)
        if host is not None:
            host.start()
        began = time.perf_counter()
        output = generate(batch, generators)
        _synchronize(self.device)
        seconds = time.perf_counter() - began
        return seconds, output, host.stop(seconds) if host is not None else None

    def warmup_done(self, times: Sequence[float], policy: WarmupPolicy, counted: bool = False) -> bool:
        """A fixed count: that many of the pass's batches, at most all of them; auto: until steady
        (with a smaller last batch: steady, that batch once, then steady again, since its compile may
        change what the full batches run); inherited: one batch. ``counted``: a FLOPs-counting batch
        ran first: it counts as a batch run, not as a time (the counting mode slows it)."""
        run = len(times) + counted
        if policy.inherited:
            return run >= 1
        if policy.batches != "auto":
            return run >= min(int(policy.batches), len(self.starts))
        if len(times) >= policy.max_batches:
            return True
        if self.short_start is None:
            return _steady(times, policy)
        short = self._short_at(times, policy)
        return short is not None and len(times) >= short + 3 and _steady(times, policy)

    def _short_at(self, times: Sequence[float], policy: WarmupPolicy) -> Optional[int]:
        """Auto warm-up: the index of the smaller last batch's one warm-up batch, right after the full
        batches were first steady (None: not steady yet)."""
        return next((k for k in range(2, len(times) + 1) if _steady(times[:k], policy)), None)

    def counted(
        self, generate: Generate, before_batch: BeforeBatch, start: int, size: Optional[int] = None
    ) -> tuple[float, float]:
        """One untimed call under ``FlopCount``: (GFLOP per image, seconds). FLOPs grow with the batch
        image for image, so the first warm-up batch, which runs anyway, can count them."""
        counter, began = FlopCount(), time.perf_counter()
        with counter:
            images = self.run(generate, before_batch, start, size)
        _synchronize(self.device)
        return counter.total / 1e9 / len(images), time.perf_counter() - began

    def warmup_batch(
        self, generate: Generate, before_batch: BeforeBatch, times: Sequence[float], counted: bool, policy: WarmupPolicy
    ) -> float:
        """The next warm-up batch after ``times``: the pass's batches in order (fixed count), full
        batches round robin and the smaller last batch once where it is due (auto)."""
        batch = len(times) + counted
        if policy.batches != "auto":
            start = self.starts[batch]
        elif self.short_start is not None and not policy.inherited and self._short_at(times, policy) == len(times):
            start = self.short_start
        else:
            start = self.full_starts[batch % len(self.full_starts)]
        return self.drawn(0, batch).timed(generate, before_batch, start)[0]


def _steady(times: Sequence[float], policy: WarmupPolicy) -> bool:
    return len(times) >= 2 and abs(times[-1] - times[-2]) <= policy.tolerance * times[-2]


# the code of every formula torch registers as reading its arguments' shapes only (not their values)
_SHAPE_FORMULA = shape_wrapper(lambda: 0).__code__


def reads_shapes_only(formula: object) -> bool:
    """Whether a FLOP formula reads its arguments' shapes only: its result may be kept per shapes."""
    return getattr(formula, "__code__", None) is _SHAPE_FORMULA


def _shapes(value: object) -> object:
    """What a shape formula reads of an argument: a tensor's shape, any other value as it is."""
    if isinstance(value, torch.Tensor):
        return value.shape
    if isinstance(value, (list, tuple)):
        return tuple(map(_shapes, value))
    if isinstance(value, dict):
        return tuple((name, _shapes(item)) for name, item in value.items())
    return value


class FlopCount(TorchDispatchMode):
    """Total FLOPs of the operations run inside it, by torch.utils.flop_counter's formulas.

    FlopCounterMode gives the same total but also attributes every operation to its modules and
    decomposes the operations it has no formula for, which made the counting call cost 4x a plain
    call on a host-bound pipeline (SD1.5 on an H200: 5.5 s of a 24 s sweep job). A test checks
    that both totals agree on every accelerator. A denoising loop repeats the same operations on the
    same shapes at every step, so a shape formula's result is kept per operation, shapes and other
    arguments (the formulas that read values, nested attention's offsets, are evaluated each time)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.known: dict[object, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += self._flops(func, formula, args, kwargs, out)
        return out

    def _flops(self, func, formula, args, kwargs, out) -> int:  # type: ignore[no-untyped-def]
        if not reads_shapes_only(formula):
            return formula(*args, **kwargs, out_val=out)
        key = (func, _shapes(args), _shapes(kwargs), _shapes(out))
        try:
            return self.known[key]
        except KeyError:
            flops = self.known[key] = formula(*args, **kwargs, out_val=out)
            return flops
        except TypeError:  # an argument that cannot be a key
            return formula(*args, **kwargs, out_val=out)


@dataclass
class _Side:
    opener: SideOpener
    label: str
    watch: Watch
    count_flops: bool = True
    warmup_times: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    checks: list[PassCheck] = field(default_factory=list)
    images: Optional[np.ndarray] = None
    peak: Optional[float] = None
    flops: Optional[float] = None
    flops_s: Optional[float] = None
    counted: bool = False  # its FLOPs were counted on its first warm-up batch
    stopped: bool = False

    def usable(self, first: "_Side", interleaved: bool) -> int:
        """Clean passes of this side, counting only those whose pair on ``first`` is clean when interleaved."""
        return sum(
            check.clean and (not interleaved or first is self or (r < len(first.checks) and first.checks[r].clean))
            for r, check in enumerate(self.checks)
        )


def default_watch(device: torch.device) -> Watch:
    """This process, watched: its threads' run-queue wait, other processes' work on its GPU."""
    return Watch(HostWatch(), DeviceWatch(device))


def count_flops(
    open_side: SideOpener, prompts: Sequence[str], batch_size: int, seed: int, device: torch.device
) -> tuple[float, float]:
    """(GFLOP per image, seconds) of one untimed call of a side's first full batch, for a side that
    is not measured here: the eager equivalent of a compiled side, whose own calls cannot be counted."""
    runner = _Runner(prompts, batch_size, seed, device)
    with open_side() as (generate, before_batch):
        return runner.counted(generate, before_batch, runner.full_starts[0])


def measure_sides(
    openers: Sequence[SideOpener],
    prompts: Sequence[str],
    *,
    batch_size: int,
    seed: int,
    warmup: WarmupPolicy,
    device: torch.device,
    repeats: int = 1,
    max_repeats: Optional[int] = None,
    interleave: bool = False,
    count_flops: Union[bool, Sequence[bool]] = True,
    labels: Sequence[str] = (),
    fresh: Optional[FreshInputs] = None,
    watches: Optional[Sequence[Watch]] = None,
) -> list[Optional[Measurement]]:
    """Measure each side ``repeats`` times over ``prompts``: side by side, or alternating passes.
    A side with fewer than ``repeats`` clean passes (paired with the first side's when alternating)
    is measured again, up to ``max_repeats`` passes in all. ``count_flops``: for all sides, or per
    side. ``watches``: one per side (default: this process). A side whose ``generate`` raises
    ``SideStopped`` gets None; the others are measured in full."""
    runner = _Runner(prompts, batch_size, seed, device, fresh)
    counted = [count_flops] * len(openers) if isinstance(count_flops, bool) else list(count_flops)
    if watches is None:
        shared = default_watch(device)
        watches = [shared] * len(openers)
    sides = [
        _Side(opener, label, watch, count_flops=c)
        for opener, label, watch, c in zip(openers, list(labels) + [""] * len(openers), watches, counted)
    ]
    max_repeats = max(repeats, max_repeats or repeats)

    def guarded(side: _Side, work: Callable[[], None]) -> None:
        if side.stopped:
            return
        try:
            work()
        except SideStopped:
            side.stopped = True

    def count_on_warmup(side: _Side) -> bool:
        """Count FLOPs on the first warm-up batch where one will run; else on one image after the passes."""
        return side.count_flops and side.flops is None and not runner.warmup_done([], warmup)

    def warm_up_batch(side: _Side, generate: Generate, before_batch: BeforeBatch) -> None:
        if count_on_warmup(side):
            side.flops, side.flops_s = runner.drawn(0, 0).counted(generate, before_batch, runner.full_starts[0])
            side.counted = True
        else:
            side.warmup_times.append(
                runner.warmup_batch(generate, before_batch, side.warmup_times, side.counted, warmup)
            )

    def warm_up_alone(side: _Side, generate: Generate, before_batch: BeforeBatch) -> None:
        with tqdm(desc=f"{side.label} warm-up", unit="batch", leave=False) as bar:
            while not runner.warmup_done(side.warmup_times, warmup, side.counted):
                warm_up_batch(side, generate, before_batch)
                bar.update()

    def warm_up_alternating() -> None:
        """Round after round, one batch of each side in the measured order, each side re-opened as its
        passes will be, until every side is steady (or at its count)."""
        with tqdm(desc="warm-up, alternating", unit="round", leave=False) as bar:
            while any(not s.stopped and not runner.warmup_done(s.warmup_times, warmup, s.counted) for s in sides):
                for side in sides:

                    def one(side: _Side = side) -> None:
                        with side.opener() as (generate, before_batch):
                            warm_up_batch(side, generate, before_batch)
                        side.watch.settle(PassCheck())  # its queued work must not land in the next side's batch

                    guarded(side, one)
                bar.update()

    def run_pass(side: _Side, repeat: int, warm: bool) -> None:
        this_pass = runner.drawn(1, repeat)  # warm-up draws its own inputs from runner
        check = PassCheck()
        with side.opener() as (generate, before_batch):
            if warm:
                warm_up_alone(side, generate, before_batch)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            outputs = []
            side.watch.device.start()
            side.watch.compiles.start()
            for start in tqdm(
                this_pass.starts,
                desc=f"{side.label} pass {repeat + 1}/{repeats}" + (" (again: not clean)" if repeat >= repeats else ""),
                unit="batch",
                leave=False,
            ):
                seconds, output, wait_share = this_pass.timed(generate, before_batch, start, side.watch.host)
                side.times.append(seconds)
                side.sizes.append(len(output))
                check.wait_shares.append(wait_share)
                outputs.append(np.asarray(output, dtype=np.float32))
            check.compilations = side.watch.compiles.stop()
            check.foreign = side.watch.device.stop()
            if side.images is None:
                side.images = np.concatenate(outputs)
            if device.type == "cuda":
                side.peak = max(side.peak or 0.0, torch.cuda.max_memory_allocated(device) / 1e9)
            if side.count_flops and side.flops is None and repeat == repeats - 1:
                # no warm-up batch counted them: one image is enough (FLOPs per image do not depend on the batch)
                side.flops, side.flops_s = this_pass.counted(generate, before_batch, 0, size=1)
        side.watch.settle(check)
        side.checks.append(check)
        mark_outliers(side.checks, side.times, side.sizes)

    def short(side: _Side) -> bool:
        return not side.stopped and side.usable(sides[0], interleave) < repeats

    if interleave:
        warm_up_alternating()
        for repeat in range(max_repeats):
            if repeat >= repeats and not any(short(s) for s in sides):
                break
            for side in sides:
                guarded(side, lambda side=side: run_pass(side, repeat, warm=False))
    else:
        for side in sides:
            for repeat in range(max_repeats):
                if repeat >= repeats and not short(side):
                    break
                guarded(side, lambda: run_pass(side, repeat, warm=repeat == 0))
    return [None if s.stopped else _measurement(s, warmup) for s in sides]


def _measurement(side: _Side, warmup: WarmupPolicy) -> Measurement:
    return Measurement(
        side.times,
        side.sizes,
        len(side.checks),
        side.warmup_times,
        side.peak,
        side.flops,
        side.images,  # type: ignore[arg-type]
        side.flops_s,
        checks=side.checks,
        warmup_stable=_steady(side.warmup_times, warmup) if warmup.batches == "auto" and not warmup.inherited else None,
        isolation=side.watch.isolation,
        warmup_inherited=warmup.inherited,
        warmup_counted=side.counted,
    )


@contextmanager
def _fixed(generate: Generate, before_batch: BeforeBatch) -> Iterator[tuple[Generate, BeforeBatch]]:
    yield generate, before_batch


def measure(
    generate: Generate,
    prompts: Sequence[str],
    *,
    batch_size: int,
    seed: int,
    warmup_batches: Union[int, str],
    device: torch.device,
    before_batch: BeforeBatch = None,
    count_flops: bool = True,
    repeats: int = 1,
    warmup_tolerance: float = 0.02,
    warmup_max_batches: int = 10,
    label: str = "",
) -> Optional[Measurement]:
    """One side alone: ``measure_sides`` with a single, always-open side (None if it stopped)."""
    (result,) = measure_sides(
        [lambda: _fixed(generate, before_batch)],
        prompts,
        batch_size=batch_size,
        seed=seed,
        warmup=WarmupPolicy(warmup_batches, warmup_tolerance, warmup_max_batches),
        device=device,
        repeats=repeats,
        count_flops=count_flops,
        labels=[label],
    )
    return result
