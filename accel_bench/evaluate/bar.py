"""The bar a task's file must clear: more faithful to the baseline than the baseline itself with its
steps cut to the same speed, by a margin.

Cutting steps is the trivial way to any speedup; the papers of DeepCache, ToMe and T-GATE compare
with it for that reason. The trusted side runs the reference in the same comparison: the baseline
file, its own sampler, on the same inputs, with its step count set to the count whose measured speed
matches the file's. Found by measurement, not by a model alone: a probe at ``ceil(steps / speedup)``
(with ``speedup`` the low end of the file's interval: never faster than the file), a latency linear
in the step count through the baseline and the probe gives the count at the file's median speed;
then one session measures that count, the one above and the probe beside the file itself, and the
fewest steps not measured faster than the file, nor any count above it, is the reference. "Faster
than the file" is judged against the lower of the file's speed in that session and the low end of its
interval: a speed ratio from another session can differ by 10% or more, and a count chosen across
sessions can be fewer steps than a cut that is the file itself.
Fidelity is pooled over the images both saw: PSNR of the mean squared error, so a batch partly
copied cannot hide its bad images behind a median.
Speeds measured while disturbed (the file's or a cut's), or a cut measured slower than the full
baseline, may have chosen the wrong count: the bar says so (``doubt``), and a file failing such a bar
has the reason ``disturbed`` beside ``no_better_than_fewer_steps``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from ..limits import Limit
from . import session
from .codefile import settable_steps
from .protocol import Exchange
from .sandbox import SandboxInfo
from .session import Settings, SideSpec
from .verdicts import images_by_input, input_key

FEWER_STEPS = "fewer_steps"
# a fewer-steps margin: the configs' fewer_steps_margin_db and a manifest task's bar
MARGIN = Limit(
    0, 30, integer=False, below=True, nullable=True, null_means="the fidelity floor alone", unit="a margin in dB"
)


REFERENCE_LABEL = "fewer steps {steps}"


def probe_steps(steps: int, speedup: float) -> int:
    """The first count tried, ``ceil(steps / speedup)``: a pipeline's fixed costs (text encoder, VAE,
    transfers) make a cut save less than its share of the steps, so it is never faster than the file."""
    return min(steps - 1, max(1, math.ceil(steps / max(speedup, 1.0) - 1e-9)))


def fitted_steps(steps: int, speedup: float, probe: int, probe_speedup: float) -> int:
    """The count at ``speedup`` on a latency linear in the step count through (``steps``, 1) and
    (``probe``, 1 / ``probe_speedup``); the probe itself where the probe was no faster than the baseline."""
    per_step = (1 - 1 / probe_speedup) / (steps - probe)
    if not per_step > 0:
        return probe
    count = steps - (1 - 1 / max(speedup, 1.0)) / per_step
    return min(probe, max(1, math.ceil(count - 1e-9)))


def chosen_steps(measured: dict[int, "Reference"], candidates: Sequence[int], speedup: float) -> int:
    """The fewest steps among ``candidates`` measured no faster than the file, nor any candidate with
    more steps (a fitted count that measured faster than the file is not its equal; latency grows with
    the step count, so a count measured slower than a larger one was measured in noise, and is not
    trusted below it); the last candidate (the probe) when none is."""
    chosen = max(candidates)
    for count in sorted(candidates, reverse=True):
        reference = measured[count]
        if reference.failure is not None:
            continue
        if reference.speedup > speedup:
            break
        chosen = count
    return chosen


def pooled_psnr(
    side: Sequence[Exchange], baseline: Sequence[Exchange], keys: Optional[set] = None
) -> tuple[float, set]:
    """(PSNR in dB of the mean squared error over every image of ``side`` with a baseline image for
    the same input (and in ``keys``, if given), capped at 99 dB; the inputs it covered)."""
    reference = images_by_input(baseline)
    errors, covered = [], set()
    for exchange in side:
        for i, image in enumerate(exchange.images):
            key = input_key(exchange, i)
            if key in reference and (keys is None or key in keys) and key not in covered:
                covered.add(key)
                diff = image.astype(np.float64) - reference[key].astype(np.float64)
                errors.append(float(np.mean(diff**2)) / 255.0**2)
    if not errors:
        return float("nan"), covered
    mse = statistics.fmean(errors)
    return (99.0 if mse == 0 else min(99.0, 10 * math.log10(1 / mse))), covered


@dataclass
class Reference:
    """The baseline cut to a step count, measured against the baseline in a session of its own."""

    steps: int
    speedup: Optional[float] = None  # median of its per-pass speedups over the baseline
    measured: list[Exchange] = field(default_factory=list)
    failure: Optional[str] = None
    doubt: Optional[str] = None  # why ``speedup`` may be wrong: disturbed passes, or a cut no faster than the baseline
    file_speedup_beside: Optional[float] = None  # the judged file's own speed in the session that chose this count


@dataclass
class Bar:
    """What a file's fidelity was judged against; ``kind`` is ``fewer_steps`` or ``floor``."""

    kind: str
    min_psnr_db: float
    margin_db: Optional[float] = None
    reference_steps: Optional[int] = None
    reference_speedup: Optional[float] = None
    file_speedup_beside: Optional[float] = None  # the file's speed measured beside the cuts that chose the count
    reference_psnr_db: Optional[float] = None
    required_psnr_db: Optional[float] = None
    psnr_db: Optional[float] = None  # the file's pooled PSNR over the reference's inputs
    images: int = 0
    note: Optional[str] = None  # why the floor alone judged a file with a task
    doubt: Optional[str] = None  # why the reference's step count may be wrong (the speeds that chose it)

    @property
    def cleared(self) -> bool:
        return self.kind != FEWER_STEPS or self.psnr_db >= self.required_psnr_db

    def explain(self) -> str:
        return (
            f"pooled PSNR {self.psnr_db:.2f} dB, below {self.required_psnr_db:.2f} dB: the baseline cut to "
            f"{self.reference_steps} steps ({self.reference_speedup:.2f}x) reaches {self.reference_psnr_db:.2f} dB, "
            f"and a task asks {self.margin_db:g} dB more" + (f" (in doubt: {self.doubt})" if self.doubt else "")
        )


def judge(
    side: Sequence[Exchange],
    baseline: Sequence[Exchange],
    reference: Reference,
    margin_db: float,
    min_psnr_db: float,
    doubt: Optional[str] = None,
) -> Bar:
    """The bar of a file whose reference was measured: fidelity over the inputs both saw. ``doubt``: why
    the file's own speed, which chose the reference's step count, may be wrong."""
    if reference.failure is not None:
        return Bar("floor", min_psnr_db, note=f"no fewer-steps reference: {reference.failure}")
    _, keys = pooled_psnr(reference.measured, baseline)
    psnr, covered = pooled_psnr(side, baseline, keys)
    if not covered:
        return Bar("floor", min_psnr_db, note="no fewer-steps reference: it shared no input with the file")
    reference_psnr, _ = pooled_psnr(reference.measured, baseline, covered)
    if reference_psnr >= 99.0:
        return Bar("floor", min_psnr_db, note="no fewer-steps reference: the baseline file ignores its step count")
    return Bar(
        FEWER_STEPS,
        min_psnr_db,
        margin_db=margin_db,
        reference_steps=reference.steps,
        reference_speedup=reference.speedup,
        file_speedup_beside=reference.file_speedup_beside,
        reference_psnr_db=reference_psnr,
        required_psnr_db=reference_psnr + margin_db,
        psnr_db=psnr,
        images=len(covered),
        doubt="; ".join(d for d in (doubt, reference.doubt) if d) or None,
    )


@dataclass(frozen=True)
class Claim:
    """A file a reference is measured for: its side, and the low end and median of its speedup in the
    comparison that judged it."""

    spec: SideSpec
    low: float
    median: float


def _session(
    base: SideSpec,
    counts: Sequence[int],
    settings: Settings,
    info: SandboxInfo,
    prompts: list[str],
    secret: int,
    files: Sequence[SideSpec] = (),
) -> tuple[dict[int, Reference], dict[str, session.SideResult]]:
    """The baseline cut to each of ``counts``, measured beside the baseline and ``files`` (run again, with
    no targets of their own: their verdicts were taken in the comparison); every side's result by label."""
    specs = [SideSpec(REFERENCE_LABEL.format(steps=count), base.path, count, set_steps=True) for count in counts]
    beside = [dataclasses.replace(spec, targets=()) for spec in files]
    results, _ = session.run([base, *beside, *specs], settings, info, prompts, secret)
    measured_base, references = results[base.label], {}
    for count, spec in zip(counts, specs):
        result = results[spec.label]
        if measured_base.failure is not None:
            references[count] = Reference(
                count, failure=f"the baseline failed beside it ({measured_base.failure.reason})"
            )
        elif result.failure is not None:
            references[count] = Reference(count, failure=f"{result.failure.reason}: {result.failure.message}")
        else:
            references[count] = measured_reference(count, measured_base, result)
    return references, results


def _speed(base: session.SideResult, side: session.SideResult) -> tuple[float, Optional[str]]:
    """(``side``'s median speedup over the baseline: its clean pass pairs, else the baseline-clean ones,
    else all; why it may be wrong: fewer clean pairs than asked, and what disturbed them)."""
    _, clean = session.watched_pairs(base, side)
    speedup = statistics.median(session.ratios(base, side, session.verdict_passes(base, side)))
    if len(clean) < max(1, side.passes_asked):
        causes = session.disturbance("baseline", base) + session.disturbance(side.spec.label, side)
        return speedup, f"{len(clean)} of {side.passes_asked} pass pairs clean: {' | '.join(causes)}"
    return speedup, None


def measured_reference(count: int, base: session.SideResult, cut: session.SideResult) -> Reference:
    """The cut's speed over the baseline, in doubt where fewer pairs than asked were clean, or where the
    cut measured slower than the full baseline: a cut only ever saves steps, so that speed is noise."""
    speedup, disturbed = _speed(base, cut)
    label, doubt = cut.spec.label, None
    if disturbed is not None:
        doubt = f"{label} measured while disturbed ({disturbed})"
    elif speedup < 1:
        doubt = f"{label} measured slower than the baseline's {base.spec.steps} steps ({speedup:.2f}x): noise"
    return Reference(count, speedup, cut.measured, doubt=doubt)


def speed_beside(base: session.SideResult, side: session.SideResult) -> tuple[Optional[float], Optional[str]]:
    """(the file's median speedup in the session of its reference cuts, or None where it failed there;
    why that speed may be wrong, or None)."""
    label = f"{side.spec.label} beside the cuts"
    if side.failure is not None or not side.pass_latencies_s:
        why = side.failure.reason if side.failure is not None else "no pass measured"
        return None, f"{label} failed ({why}): the count was chosen against the probe"
    speedup, disturbed = _speed(base, side)
    return speedup, None if disturbed is None else f"{label} measured while disturbed ({disturbed})"


def measure_references(
    base: SideSpec,
    claims: dict[str, Claim],
    settings: Settings,
    info: SandboxInfo,
    prompts: list[str],
    secret: int,
) -> dict[str, Reference]:
    """For each file (label -> its claim), the baseline cut to the step count whose measured speed
    matches the file's, on the comparison's inputs (``secret``). A session of probes at
    ``probe_steps``; a session of the fitted count, one step more and the probe, beside the files; the
    fewest steps not measured faster than the file in that session, nor than its low end. Files of
    similar speed share their cuts."""
    if not claims:
        return {}
    failure = None
    if base.steps is None or base.steps < 2:
        failure = f"the baseline runs {base.steps} steps: there are no fewer"
    elif not base.path.is_file() or not settable_steps(base.path):
        failure = "the baseline file's step count cannot be set (inference() reads no NUM_INFERENCE_STEPS)"
    if failure is not None:
        return {label: Reference(0, failure=failure) for label in claims}
    probes = {label: probe_steps(base.steps, claim.low) for label, claim in claims.items()}
    first, _ = _session(base, sorted(set(probes.values())), settings, info, prompts, secret)
    live = sorted(label for label in claims if first[probes[label]].failure is None)
    tried = {label: _tried(base.steps, claims[label], first[probes[label]]) for label in live}
    references = {label: first[probes[label]] for label in claims if label not in live}
    if live:
        counts = sorted({count for label in live for count in tried[label]})
        beside = [claims[label].spec for label in live]
        measured, results = _session(base, counts, settings, info, prompts, secret, beside)
        for label in live:
            references[label] = reference_for(
                claims[label], first[probes[label]], tried[label], measured, results[base.label], results[label]
            )
    return references


def _tried(steps: int, claim: Claim, probe: Reference) -> list[int]:
    """The counts measured beside the file: the fitted one, one more, and the probe."""
    fitted = fitted_steps(steps, claim.median, probe.steps, probe.speedup)
    return sorted({fitted, min(fitted + 1, probe.steps), probe.steps})


def reference_for(
    claim: Claim,
    probe: Reference,
    tried: Sequence[int],
    measured: dict[int, Reference],
    base: session.SideResult,
    beside: session.SideResult,
) -> Reference:
    """The cut a file is judged against: among ``tried`` (measured beside ``beside``, the file run again),
    the fewest steps no faster than the lower of its speed there and the low end of its claim, so that a
    file cannot lower its own bar by running faster in one session; where the file failed beside the
    cuts, the probe's count (the most steps tried), and where every cut failed, the probe as first measured."""
    speed, doubt = speed_beside(base, beside)
    limit = min(claim.low, speed) if speed is not None else 0.0
    chosen = measured[chosen_steps(measured, tried, limit)]
    if chosen.failure is not None:
        chosen = probe
    return dataclasses.replace(
        chosen, file_speedup_beside=speed, doubt="; ".join(d for d in (doubt, chosen.doubt) if d) or None
    )
