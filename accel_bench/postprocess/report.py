"""``report.html``: per combination the Pareto plot, the selected entries with their metrics, and image
grids (the baseline's and each configuration's images for the same prompts and seeds) for the selected
entries and their neighbours on the front. Self-contained: every image is embedded, so it reads offline."""

from __future__ import annotations

import base64
import html
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from ..record import RESULT_FILE
from .plots import pareto_front
from .records import Measured
from .select import RANDOM_NOTE, Entry

REPORT_IMAGES = "report_images"  # in out_dir: images regenerated where the sweep saved none
THUMBNAIL_PX = 192

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td.text { text-align: left; }
img.plot { max-width: 100%; border: 1px solid #ddd; }
.grid { display: grid; gap: 4px; margin: 0.5em 0 1.5em; align-items: start; }
.grid figure { margin: 0; } .grid img { width: 100%; display: block; }
.grid figcaption, .label { font-size: 0.75em; color: #555; }
.note { background: #fff4d6; padding: 0.4em 0.8em; border-left: 4px solid #e0a800; }
"""
# after load: how many images decoded, for a reader (and the test) to see that everything rendered
_SCRIPT = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const shown = images.filter((image) => image.complete && image.naturalWidth > 0).length;
  document.body.dataset.rendered = shown + "/" + images.length;
});
"""


def _data_uri(path: Path, thumbnail: bool) -> str:
    from PIL import Image

    if not thumbnail:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()
    image = Image.open(path).convert("RGB")
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    if image.width < THUMBNAIL_PX:  # tiny pipelines: shown at a size one can see, pixels kept sharp
        image = image.resize((THUMBNAIL_PX, THUMBNAIL_PX * image.height // image.width), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def shown_rows(rows: Sequence[Measured], entries: Sequence[Entry]) -> list[Measured]:
    """The selected entries' rows and their neighbours on the (budget metric, speedup) front, by run id."""
    front = pareto_front([(m.loss, m.speedup) for m in rows if m.loss is not None], lower_x_is_better=True)
    on_front = sorted(
        (m for m in rows if m.loss is not None and (m.loss, m.speedup) in front), key=lambda m: (m.loss, -m.speedup)
    )
    chosen = {e.run_id for e in entries}
    wanted = set(chosen)
    for index, m in enumerate(on_front):
        if m.run_id in chosen:
            wanted.update(n.run_id for n in on_front[max(0, index - 1) : index + 2])
    return sorted((m for m in {m.run_id: m for m in rows}.values() if m.run_id in wanted), key=lambda m: m.run_id)


def _images(m: Measured, out: Path, num_prompts: int) -> tuple[list[Path], list[Path], list[str], str]:
    """(baseline images, this configuration's, their prompts, where they came from)."""
    saved = Path(m.run_dir) / "images"
    stored = json.loads((Path(m.run_dir) / RESULT_FILE).read_text())
    if (saved / "accel").is_dir() and (saved / "baseline").is_dir():
        base, accel = (sorted((saved / side).glob("*.png"))[:num_prompts] for side in ("baseline", "accel"))
        if base and len(base) == len(accel):
            from ..prompts import load_prompts

            prompts = load_prompts(stored["config"]["prompts"])[: len(base)]
            return base, accel, prompts, "the sweep's saved images"
    from .quality import generate_pair

    made = generate_pair(m, out / REPORT_IMAGES, _run_prompts(stored)[:num_prompts], None)
    return made.baseline, made.accelerated, made.prompts, "regenerated for this report"


def _run_prompts(stored: dict) -> list[str]:
    from ..prompts import load_prompts

    return load_prompts(stored["config"]["prompts"])[: stored["config"]["num_prompts"]]


def _grid(m: Measured, out: Path, num_prompts: int, selected: bool) -> str:
    if not (Path(m.run_dir) / RESULT_FILE).is_file():
        base, accel, prompts, source = [], [], [], f"no images: its run folder {m.run_dir} is gone"
    else:
        base, accel, prompts, source = _images(m, out, num_prompts)
    cells = ['<div class="label">baseline</div>'] + [
        f'<figure><img src="{_data_uri(p, True)}" alt="baseline {i}"><figcaption>{html.escape(prompt[:60])}'
        "</figcaption></figure>"
        for i, (p, prompt) in enumerate(zip(base, prompts))
    ]
    cells += [f'<div class="label">{html.escape(m.accel)}</div>'] + [
        f'<figure><img src="{_data_uri(p, True)}" alt="{html.escape(m.accel)} {i}"></figure>'
        for i, p in enumerate(accel)
    ]
    params = html.escape(json.dumps(m.params, sort_keys=True))
    title = (
        f"{'selected' if selected else 'front neighbour'}: {html.escape(m.accel)} {params}, "
        f"{m.speedup:.2f}x, loss {_fmt(m.loss, '.4f')}, PSNR {_fmt(m.psnr_db, '.1f')} dB, LPIPS {_fmt(m.lpips, '.4f')}"
    )
    return (
        f'<h4>{title} <span class="label">({source})</span></h4>'
        f'<div class="grid" style="grid-template-columns: 7em repeat({len(base)}, minmax(0, {THUMBNAIL_PX}px))">'
        + "".join(cells)
        + "</div>"
    )


def _confirmed(e: Entry) -> str:
    """The confirmed speedup; one measured while disturbed is marked, with what disturbed it on hover."""
    figure = _fmt(e.confirmed_speedup, ".2f")
    if not e.confirmed_disturbed:
        return figure
    return f'<span title="{html.escape(e.confirmed_disturbed)}">{figure} (disturbed)</span>'


def _entries_table(entries: Sequence[Entry], loss_label: str) -> str:
    head = ["budget", "method", "params", "speedup", "confirmed", f"{loss_label} (budgeted)", "CLIP loss", "PSNR dB"]
    head += ["LPIPS", "FID"]
    rows = [
        "<tr>"
        + "".join(
            [
                f"<td>{e.quality_budget:g}</td>",
                f'<td class="text">{html.escape(e.accel)}</td>',
                f'<td class="text">{html.escape(json.dumps(e.params, sort_keys=True))}</td>',
                f"<td>{e.speedup:.2f}x</td>",
                f"<td>{_confirmed(e)}</td>",
                f"<td>{_fmt(e.loss, '.4f')}</td>",
                f"<td>{_fmt(e.clip_loss, '.4f')}</td>",
                f"<td>{_fmt(e.psnr_db, '.1f')}</td>",
                f"<td>{_fmt(e.lpips, '.4f')}</td>",
                f"<td>{_fmt(e.fid, '.2f')}</td>",
            ]
        )
        + "</tr>"
        for e in entries
    ]
    return (
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
        if rows
        else "<p>No entry within any budget.</p>"
    )


def write_report(
    out: Path,
    rows: Sequence[Measured],
    entries: Sequence[Entry],
    plots: Sequence[Path],
    loss_label: str,
    num_prompts: int,
) -> Path:
    """``out/report.html``; ``plots`` as ``plot_all`` wrote them, one per combination of ``rows``."""
    from tqdm.auto import tqdm

    groups: dict[tuple, list[Measured]] = defaultdict(list)
    for m in rows:
        groups[(m.pipeline, m.scheduler, m.steps, m.batch_size)].append(m)
    plot_by_name = {p.name: p for p in plots}
    sections = []
    for key in tqdm(sorted(groups), desc="report", unit="combination"):
        mine = groups[key]
        pipeline, scheduler, steps, batch_size = key
        chosen = [e for e in entries if (e.pipeline, e.scheduler, e.steps, e.batch_size) == key]
        plot = plot_by_name.get(f"{pipeline}_{scheduler}_{steps}_bs{batch_size}.png")
        parts = [
            f"<h2>{html.escape(mine[0].pipeline_label)} | {html.escape(mine[0].scheduler_label)} | {steps} steps | batch {batch_size}</h2>"
        ]
        if any(m.weights == "random" for m in mine):
            parts.append(f'<p class="note">{html.escape(RANDOM_NOTE)}</p>')
        if plot is not None:
            parts.append(
                f'<img class="plot" src="{_data_uri(plot, False)}" alt="Pareto plot {html.escape(plot.name)}">'
            )
        parts.append(_entries_table(chosen, loss_label))
        chosen_ids = {e.run_id for e in chosen}
        for m in shown_rows(mine, chosen):
            parts.append(_grid(m, out, num_prompts, m.run_id in chosen_ids))
        sections.append("<section>" + "".join(parts) + "</section>")
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>accel_bench report</title>'
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
        f"<h1>accel_bench report: {len(groups)} combination(s), {len(entries)} selected entry(ies)</h1>"
        f"<p>Budgets bound {html.escape(loss_label)}. Images: the baseline's and each configuration's for the same "
        "prompts and seeds.</p>" + "".join(sections) + "</body></html>\n"
    )
    path = out / "report.html"
    path.write_text(page)
    return path
