"""Pareto plots: speedup against the budget metric and against PSNR, per (pipeline, scheduler, steps, batch)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .records import Measured  # noqa: E402

MARKERS = "osD^vP*Xhp<>"


def pareto_front(points: Sequence[tuple[float, float]], lower_x_is_better: bool) -> list[tuple[float, float]]:
    """Points no other point beats on both x and speedup (y, higher is better), ordered by x."""
    ordered = sorted(points, key=lambda p: (p[0], -p[1]) if lower_x_is_better else (-p[0], -p[1]))
    front, best = [], float("-inf")
    for x, y in ordered:
        if y > best:
            front.append((x, y))
            best = y
    return sorted(front)


def plot_all(
    measured: Sequence[Measured], budgets: Sequence[float], folder: Path, loss_label: str = "CLIP loss"
) -> list[Path]:
    """One figure per (pipeline, scheduler, steps, batch size): speedup against the budget metric
    (``loss_label``) and against PSNR, each with its Pareto front."""
    groups: dict[tuple, list[Measured]] = defaultdict(list)
    for m in measured:
        groups[(m.pipeline, m.scheduler, m.steps, m.batch_size)].append(m)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (pipeline, scheduler, steps, batch_size), rows in sorted(groups.items()):
        path = folder / f"{pipeline}_{scheduler}_{steps}_bs{batch_size}.png"
        _plot_group(
            rows,
            budgets,
            path,
            f"{rows[0].pipeline_label} | {rows[0].scheduler_label} | {steps} steps | batch {batch_size}",
            loss_label,
        )
        written.append(path)
    return written


def _draw_front(axes, front: Sequence[tuple[float, float]]) -> None:
    """The front's points circled and joined (nothing where there is no point)."""
    if front:
        axes.plot(
            *zip(*front),
            color="black",
            linewidth=1.5,
            marker="o",
            markersize=11,
            markerfacecolor="none",
            label="Pareto front",
        )


def _plot_group(rows: Sequence[Measured], budgets: Sequence[float], path: Path, title: str, loss_label: str) -> None:
    fig, (by_loss, by_psnr) = plt.subplots(1, 2, figsize=(12, 4.8))
    methods = sorted({m.accel for m in rows})
    for index, method in enumerate(methods):
        mine = [m for m in rows if m.accel == method]
        marker = MARKERS[index % len(MARKERS)]
        for screened in (False, True):  # a search's screening rows hollow, its full ones (and a grid's) filled
            scored = [m for m in mine if m.loss is not None and (m.search_stage == "screen") == screened]
            if scored:
                by_loss.scatter(
                    [m.loss for m in scored],
                    [m.speedup for m in scored],
                    marker=marker,
                    label=f"{method} (screened)" if screened else method,
                    alpha=0.75,
                    facecolors="none" if screened else None,
                    edgecolors=f"C{index}",
                    color=None if screened else f"C{index}",
                )
        finite = [m for m in mine if m.psnr_db is not None and m.psnr_db != float("inf")]
        by_psnr.scatter(
            [m.psnr_db for m in finite], [m.speedup for m in finite], marker=marker, label=method, alpha=0.75
        )

    measured = [m for m in rows if m.loss is not None and m.search_stage != "screen"]
    front = pareto_front([(m.loss, m.speedup) for m in measured], lower_x_is_better=True)
    _draw_front(by_loss, front)
    for budget in sorted(budgets):
        by_loss.axvline(budget, linestyle="--", color="grey", linewidth=1)
        by_loss.text(budget, by_loss.get_ylim()[1], f" budget {budget:g}", va="top", fontsize=8, color="grey")
    psnr_points = [(m.psnr_db, m.speedup) for m in rows if m.psnr_db is not None and m.psnr_db != float("inf")]
    _draw_front(by_psnr, pareto_front(psnr_points, lower_x_is_better=False))

    random = any(m.weights == "random" or m.clip_weights == "random" for m in rows)
    by_loss.set(xlabel=f"{loss_label} (against the baseline)", ylabel="speedup (x)")
    by_psnr.set(xlabel="PSNR to baseline images (dB)", ylabel="speedup (x)")
    by_loss.legend(fontsize=8)
    fig.suptitle(title + ("  [random weights: quality axes are not meaningful]" if random else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
