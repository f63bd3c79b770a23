"""What people read: the table a run ends with."""

from __future__ import annotations

import json
from typing import Optional

from .record import RESULT_FILE, Row, Side


def fmt(value: Optional[float], spec: str) -> str:
    """A figure for the console; "-" where there is none (a CPU's peak memory, a failed side)."""
    return "-" if value is None else format(value, spec)


def rate(side: Side) -> str:
    """Achieved TFLOP/s, with its share of the device's peak where that is known."""
    if side.tflops is None:
        return "-"
    return f"{side.tflops:.3g}" + (f" ({side.peak_share:.1%})" if side.peak_share is not None else "")


def format_summary(row: Row, summary_path: str) -> str:
    """The short table a run ends with."""
    if row.status != "ok":
        return f"{row.status}: {row.error}\nrow appended to {summary_path}"
    a, b = row.accelerated, row.base
    fidelity = f"PSNR {fmt(row.psnr_db, '.1f')} dB, SSIM {fmt(row.ssim, '.3f')}, LPIPS {fmt(row.lpips, '.4f')}"
    random = row.weights == "random" or any(w.endswith("/random") for w in row.metric_weights.values())
    random_note = "  (random weights: not a quality measure)" if random else ""
    scored_by = ", ".join(
        f"{name} {weights}" for name, weights in sorted(row.metric_weights.items()) if weights != "none"
    )
    width = max(22, len(row.accel) + 2)  # the method's column fits its name: a compiled stack's is long

    def line(label: str, base: str, accelerated: str, note: str = "") -> str:
        return f"{label:24}{base:>12}{accelerated:>{width}}{note}"

    def figures(label: str, field: str, spec: str, note: str = "") -> str:
        """One measured figure of both sides."""
        return line(label, fmt(getattr(b, field), spec), fmt(getattr(a, field), spec), note)

    speedup = f"   speedup {row.speedup:.2f}x [{row.speedup_min:.2f}-{row.speedup_max:.2f}]"
    repeats = (
        f"   {row.repeats} repeat(s){', interleaved (baseline re-measured)' if row.interleaved else ''}"
        f"{', baseline reused' if row.baseline_cached else ''}; warm-up {b.warmup_batches}/{a.warmup_batches} batches"
    )
    eager_flops = "   FLOPs of the eager equivalent" if a.flops_eager or b.flops_eager else ""
    compiled = a.compile_s is not None or b.compile_s is not None
    lines = [
        f"{row.pipeline_label} [{row.weights} weights] | {row.scheduler_class} {row.steps} steps | "
        f"{row.num_images} images, batch {row.batch_size}, {row.resolution}px | {row.device} ({row.device_name}) {row.dtype}",
        line("", "baseline", row.accel),
        figures("latency (s / image)", "latency_s", ".4f", speedup),
        figures("spread over repeats", "latency_spread", ".1%", repeats),
        figures("batch median (s)", "batch_time_median_s", ".4f"),
        figures("GFLOP / image", "flops_per_image", ".2f", f"   FLOPs ratio {fmt(row.flops_ratio, '.2f')}x"),
        line("TFLOP/s (of peak)", rate(b), rate(a), eager_flops),
        figures("peak memory (GB)", "peak_mem_gb", ".2f"),
        *([figures("compile (s)", "compile_s", ".1f", "   in the warm-up, outside the latency")] if compiled else []),
        figures("CLIP score", "clip_score", ".2f", f"   loss {fmt(row.clip_loss, '+.2%')}{random_note}"),
        line("fidelity to baseline", "", fidelity, random_note if row.lpips is not None else ""),
        f"params {json.dumps(row.accel_params, sort_keys=True)} | baseline {row.baseline} | scored by {scored_by or '-'}",
        *(
            [f"compiled under {' '.join(f'{k}={v}' for k, v in row.compile_settings.items())}"]
            if row.compile_settings
            else []
        ),
        *watch_lines(row),
        f"row appended to {summary_path}; details in {row.run_dir}/{RESULT_FILE}",
    ]
    return "\n".join(lines)


def watch_lines(row: Row) -> list[str]:
    """What the watches saw, loud: disturbed figures, passes measured again, an unchecked GPU."""
    lines = []
    dropped = {label: side.dropped_passes for label, side in (("baseline", row.base), (row.accel, row.accelerated))}
    if any(dropped.values()):
        again = ", ".join(f"{label} {n}" for label, n in dropped.items() if n)
        lines.append(f"re-measured: passes that were not clean were measured again and left out ({again})")
    if row.disturbed:
        lines.append(f"DISTURBED (post-process leaves this row out unless include_disturbed=true): {row.disturbed}")
    unsteady = [
        label for label, side in (("baseline", row.base), (row.accel, row.accelerated)) if side.warmup_stable is False
    ]
    if unsteady:
        lines.append(
            f"warm-up never steady: {', '.join(unsteady)} (stopped at warmup_max_batches without two batches within "
            f"warmup_tolerance)"
        )
    if row.isolation and row.isolation.startswith("unchecked"):
        lines.append(f"other GPU work {row.isolation}")
    return lines
