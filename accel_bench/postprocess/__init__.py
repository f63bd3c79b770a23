"""Post-process sweeps: search_params.json, coverage, Pareto plots, verified ground-truth code, manifest.

    python -m accel_bench.postprocess sweep_dir=multirun/2026-11-24/10-00-00 out_dir=dataset/

Data flows one way: summary rows -> typed records -> entries -> tasks -> files. Every list that
decides an id or an order is sorted, so the same inputs give byte-identical outputs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from .. import metrics
from ..config import group_options
from ..errors import ConfigError
from ..evaluate.bar import MARGIN
from ..evaluate.manifest import write_manifest
from ..limits import Limit, check_limits, limited
from ..record import RESULT_FILE
from ..sweep.layout import SweepLayout
from . import ground_truth
from .codegen import CodeSpec, generate_code
from .manifest import assign_ids, build_tasks, manifest_task, reference_baseline_path
from .plots import plot_all
from .records import read_summaries
from .report import write_report
from .select import Confirmation, Entry, gaps, left_out, select, select_confirmed
from .verify import verify_file

PLACEHOLDERS = {"pipeline": "SD1.5", "sampler": "DDIM", "steps": 50, "speedup": "2", "methods": "DeepCache"}


@dataclass
class GridConfig:
    pipelines: List[str] = MISSING
    schedulers: List[str] = MISSING
    steps: List[int] = MISSING


@dataclass
class PostprocessConfig:
    sweep_dir: Any = MISSING  # a folder or a list of folders written by run.py -m
    out_dir: str = "dataset"
    budgets: List[float] = MISSING
    budget_metric: str = "clip"  # what the budgets bound: clip (CLIP loss) | ssim (1 - SSIM) | lpips
    include_random: bool = False
    include_disturbed: bool = False
    start_id: int = limited(192, Limit(0))
    grid: GridConfig = MISSING
    templates: Dict[str, str] = MISSING
    verify: bool = True
    confirm: bool = False
    confirm_repeats: int = limited(3, Limit(1))
    quality_prompts: Optional[str] = None  # with confirm=true: a prompts file (.txt/.csv/.jsonl) for FID
    quality_num_prompts: Optional[int] = limited(None, Limit(2, nullable=True))  # its first N (null: all of them)
    quality_batch_size: Optional[int] = limited(None, Limit(1, nullable=True))  # null: each entry's own batch size
    fid_weights: str = "auto"  # auto (as the pipeline's weights) | pretrained (the FID Inception) | random
    fid_reference_dir: Optional[str] = None  # a folder of reference images (e.g. COCO val) for a second FID
    # each task's bar in the manifest (null: the fidelity floor alone)
    fewer_steps_margin_db: Optional[float] = limited(1.0, MARGIN)
    bar_check: bool = True  # with verify=true: each ground truth judged against its bar; tasks it fails are dropped
    bar_num_prompts: int = limited(4, Limit(1))  # prompts per ground-truth judgement
    report: bool = True  # report.html: plots, entries and image grids
    report_num_prompts: int = limited(4, Limit(1))  # images per grid row (the sweep's saved ones, else regenerated)
    cache_dir: str = "~/.cache/accel_bench"


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="postprocess_schema", node=PostprocessConfig)


DATASET_MARK = ".accel_bench_dataset"  # an out_dir post-process wrote


def sweep_dirs(cfg: Any) -> list[Path]:
    value = cfg.sweep_dir
    return [Path(value)] if isinstance(value, str) else [Path(v) for v in value]


def check(cfg: Any) -> None:
    from omegaconf import OmegaConf

    allowed = "a sweep folder, or a list of distinct ones, e.g. [a,b]"
    if OmegaConf.is_missing(cfg, "sweep_dir"):  # OmegaConf would raise at the first read, in a traceback
        raise ConfigError("sweep_dir", "???", f"{allowed} (it has no default)")
    folders = sweep_dirs(cfg)
    if not folders or len({folder.resolve() for folder in folders}) != len(folders):
        shown = cfg.sweep_dir if isinstance(cfg.sweep_dir, str) else list(cfg.sweep_dir)
        raise ConfigError("sweep_dir", shown, allowed)
    for folder in folders:
        if not SweepLayout(folder).summary.is_file():
            raise ConfigError("sweep_dir", str(folder), "a sweep folder written by run.py -m (with a summary.csv)")
    _check_out_dir(cfg.out_dir)
    _check_grid(cfg.grid)
    metrics.check_budget_metric(cfg.budget_metric)
    for budget in cfg.budgets if cfg.budgets else [None]:  # no budget: no entry could be selected
        if budget is None or not 0 <= budget < 1:
            label = metrics.METRICS[cfg.budget_metric].budget_label
            raise ConfigError("budgets", list(cfg.budgets), f"budgets on {label} in [0, 1), e.g. [0.02,0.05]")
    check_limits(cfg, PostprocessConfig, keys=("fewer_steps_margin_db",))
    _check_quality(cfg)
    check_limits(cfg, PostprocessConfig, keys=("report_num_prompts", "bar_num_prompts", "confirm_repeats", "start_id"))
    for name, template in cfg.templates.items():
        try:
            template.format(**PLACEHOLDERS)
        except (KeyError, IndexError, ValueError) as error:
            raise ConfigError(
                f"templates.{name}", template, f"placeholders among {{{'}, {'.join(PLACEHOLDERS)}}} ({error!r})"
            ) from None


def _check_out_dir(out_dir: str) -> None:
    """A new or empty folder, or one post-process wrote: it replaces its own files and folders there
    (``gt_code/``, ``models/``, ...), which in another folder could be someone's."""
    out = Path(out_dir)
    if not str(out_dir).strip():
        raise ConfigError("out_dir", out_dir, "a folder for the dataset (a path, not empty)")
    if out.exists() and not out.is_dir():
        raise ConfigError("out_dir", out_dir, "a folder for the dataset (new, or post-process's own), not a file")
    if (
        out.is_dir()
        and any(out.iterdir())
        and not any((out / name).is_file() for name in (DATASET_MARK, "search_params.json"))
    ):
        allowed = (
            "a new or empty folder, or one post-process wrote (this one holds other files, which it could replace)"
        )
        raise ConfigError("out_dir", out_dir, allowed)


def _check_grid(grid: Any) -> None:
    """The coverage grid names pipelines and schedulers as their config groups do (``sd15``, ``unipc``):
    a name no row can carry would report every cell of it as missing."""
    for key, group in (("pipelines", "pipeline"), ("schedulers", "scheduler")):
        options = group_options(group)
        if not grid[key] or any(value not in options for value in grid[key]):
            raise ConfigError(f"grid.{key}", list(grid[key]), f"a non-empty list of {' | '.join(options)}")
    if not grid.steps or any(steps < 1 for steps in grid.steps):
        raise ConfigError("grid.steps", list(grid.steps), "a non-empty list of step counts >= 1")


def _check_quality(cfg: Any) -> None:
    from ..metrics.fid import FID_WEIGHTS, image_files

    if cfg.fid_weights not in FID_WEIGHTS:
        raise ConfigError("fid_weights", cfg.fid_weights, " | ".join(FID_WEIGHTS))
    if cfg.quality_prompts is None:
        for key in ("quality_num_prompts", "fid_reference_dir"):
            if cfg[key] is not None:
                raise ConfigError(key, cfg[key], "null unless quality_prompts names a prompts file")
        return
    if not cfg.confirm:
        raise ConfigError("quality_prompts", cfg.quality_prompts, "null, or a prompts file with confirm=true")
    quality_prompts(cfg)
    check_limits(cfg, PostprocessConfig, keys=("quality_num_prompts", "quality_batch_size"))
    reference = cfg.fid_reference_dir
    if reference is not None and (not Path(reference).is_dir() or len(image_files(Path(reference))) < 2):
        raise ConfigError("fid_reference_dir", reference, "null or a folder with at least two .png/.jpg/.webp images")


def quality_prompts(cfg: Any) -> list[str]:
    """The quality stage's prompts: the file's first ``quality_num_prompts`` (its errors name the key)."""
    from ..prompts import load_prompts

    try:
        prompts = load_prompts({"source": "file", "path": cfg.quality_prompts})
    except ConfigError as error:
        raise ConfigError("quality_prompts", cfg.quality_prompts, error.allowed) from None
    wanted = cfg.quality_num_prompts or len(prompts)
    if len(prompts) < max(2, wanted):
        raise ConfigError("quality_prompts", cfg.quality_prompts, f"a file with at least {max(2, wanted)} prompts")
    return prompts[:wanted]


def confirm_by_rerun(folder: Path, repeats: int, budget_metric: str):
    """Re-run a row's own config (from its result.json), interleaved against a re-measured baseline."""
    from omegaconf import OmegaConf

    from .. import experiment
    from ..config import RunConfig

    def confirm(m):
        stored = json.loads((Path(m.run_dir) / RESULT_FILE).read_text())["config"]
        config = OmegaConf.merge(OmegaConf.structured(RunConfig), stored)  # keys newer than the row get defaults
        config.interleave, config.repeats, config.save_images = True, repeats, False
        config.summary_path = str(SweepLayout(folder).summary)
        row = experiment.run(config, folder / m.run_id)
        if row.status != "ok":
            return Confirmation(0.0, 0.0, 0.0, None)  # a winner that cannot be re-measured does not hold up
        return Confirmation(
            row.speedup,
            row.speedup_min,
            row.speedup_max,
            getattr(row, metrics.budget_column(budget_metric)),
            row.disturbed or None,
        )

    return confirm


def _with_quality(cfg: Any, entries: list[Entry], out: Path) -> list[Entry]:
    from .quality import measure_quality

    found = measure_quality(
        entries,
        out,
        quality_prompts(cfg),
        cfg.fid_weights,
        Path(cfg.fid_reference_dir) if cfg.fid_reference_dir else None,
        cfg.quality_batch_size,
    )
    return [
        dataclasses.replace(
            e,
            fid=q.fid,
            fid_reference=q.fid_reference,
            base_fid_reference=q.base_fid_reference,
            quality_lpips=q.lpips,
            fid_images=q.images,
            fid_weights=q.weights,
            quality_s=q.seconds,
        )
        for e in entries
        for q in [found[e.run_id]]
    ]


def bundled_model(pipeline: str) -> str:
    """Where a dataset keeps the random-weight model of a pipeline without a hub id (tiny, tiny_xl)."""
    return f"models/{pipeline}"


def code_spec(entry: Entry, with_methods: bool = True) -> CodeSpec:
    return CodeSpec(
        model_id=entry.model_id or bundled_model(entry.pipeline),
        family=entry.family,
        scheduler_class=entry.scheduler_class,
        scheduler_kwargs=entry.scheduler_kwargs,
        steps=entry.steps,
        resolution=entry.resolution,
        guidance_scale=entry.guidance_scale,
        methods=entry.methods if with_methods else [],
        params=entry.params if with_methods else {},
    )


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


@dataclass
class Report:
    entries: list
    missing: list
    tasks: int
    plots: int
    out_dir: Path
    notes: list[str]  # what confirmation re-ranked, and which confirmations were disturbed
    left_out: dict[str, list] = dataclasses.field(default_factory=dict)  # ok rows no entry could come from, by reason
    dropped: dict[str, str] = dataclasses.field(default_factory=dict)  # prompt id -> why its task was dropped
    over_budget: dict[str, str] = dataclasses.field(default_factory=dict)  # prompt id -> its ground truth over budget


def postprocess(cfg: Any) -> Report:
    check(cfg)
    read, statuses = read_summaries(sweep_dirs(cfg), cfg.budget_metric)  # a summary it cannot read: nothing written
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / DATASET_MARK).touch()  # first: a stage cut short leaves a folder post-process may go on in
    label = metrics.METRICS[cfg.budget_metric].budget_label
    measured = [m for m in read if cfg.include_disturbed or not m.disturbed]
    budgets = sorted(cfg.budgets)
    notes: list[str] = []
    if cfg.confirm:
        entries, notes = select_confirmed(
            measured,
            budgets,
            cfg.include_random,
            confirm_by_rerun(out / "confirm", cfg.confirm_repeats, cfg.budget_metric),
            cfg.budget_metric,
        )
    else:
        entries = select(measured, budgets, cfg.include_random, cfg.budget_metric)
    if cfg.quality_prompts is not None:
        entries = _with_quality(cfg, entries, out)
    grid = [(p, s, n) for p in cfg.grid.pipelines for s in cfg.grid.schedulers for n in cfg.grid.steps]
    missing = gaps(grid, budgets, measured, statuses, entries, cfg.include_random, label)

    _write_json(
        out / "search_params.json", {"entries": [e.to_json() for e in entries], "missing": [vars(g) for g in missing]}
    )
    _write_coverage(out / "coverage.csv", grid, budgets, entries, missing)
    shown = [m for m in measured if cfg.include_random or m.weights == "pretrained"]
    plots = plot_all(shown, budgets, out / "plots", label)
    (out / "report.html").unlink(missing_ok=True)
    if cfg.report:
        write_report(out, shown, entries, plots, label, cfg.report_num_prompts)

    tasks = build_tasks(entries, dict(cfg.templates))
    mapping_path = out / "file_id_mapping.json"
    existing = json.loads(mapping_path.read_text()) if mapping_path.exists() else {}
    ids = assign_ids(tasks, cfg.start_id, existing)

    code_dir = out / "gt_code"
    shutil.rmtree(code_dir, ignore_errors=True)  # only this run's files: stale ids must not linger
    (code_dir / "baselines").mkdir(parents=True)
    written: list[tuple[Path, CodeSpec]] = []
    for task in tasks:
        spec = code_spec(task.entry)
        e = task.entry
        doc = (
            f"{task.text}\n\nGround truth by accel_bench: {task.optimizations}.\n"
            f"Measured {e.speedup:.2f}x at {label} {e.loss:.4f} (budget {e.quality_budget:g}), batch size "
            f"{e.batch_size}, {e.weights} weights, on {e.device_name} (run {e.run_id})."
        )
        path = code_dir / f"{ids[task.original_filename]}.py"
        path.write_text(generate_code(spec, doc))
        written.append((path, spec))
    for relative, e in sorted({reference_baseline_path(t.entry): t.entry for t in tasks}.items()):
        spec = code_spec(e, with_methods=False)
        path = out / relative
        path.write_text(
            generate_code(
                spec, f"Reference baseline: {e.pipeline_label}, {e.scheduler_label}, {e.steps} steps, no acceleration."
            )
        )
        written.append((path, spec))
    _bundle_models(out, sorted({t.entry.pipeline for t in tasks if t.entry.model_id is None}), cfg.cache_dir)
    if cfg.verify:
        from tqdm.auto import tqdm

        for path, spec in tqdm(written, desc="verify generated code", unit="file"):
            verify_file(path, spec, cfg.cache_dir)

    manifest = [manifest_task(t, ids[t.original_filename], cfg.fewer_steps_margin_db) for t in tasks]
    write_manifest(out / "manifest.json", manifest)
    _write_json(mapping_path, dict(sorted(ids.items())))
    dropped: dict[str, str] = {}
    over: dict[str, str] = {}
    for stale in ("dropped.json", "ground_truth_checks.json"):
        (out / stale).unlink(missing_ok=True)
    if cfg.verify and cfg.bar_check and manifest:
        records, again = ground_truth.check(out / "manifest.json", cfg.cache_dir, cfg.bar_num_prompts)
        ground_truth.write_checks(out, records, again)
        dropped = ground_truth.why_dropped(records)
        manifest = ground_truth.drop(out, manifest, dropped)
        write_manifest(out / "manifest.json", manifest)
        over = ground_truth.over_budget(records, manifest)
    return Report(
        entries,
        missing,
        len(manifest),
        len(plots),
        out,
        notes,
        left_out(read, cfg.include_random, cfg.include_disturbed),
        dropped,
        over,
    )


def _bundle_models(out: Path, pipelines: list[str], cache_dir: str) -> None:
    """Random-weight pipelines without a hub id travel with the dataset, so its files run as written."""
    from omegaconf import OmegaConf

    from ..config import CONF_DIR
    from ..pipelines import random_weights_dir

    shutil.rmtree(out / "models", ignore_errors=True)
    for pipeline in pipelines:
        architecture = OmegaConf.load(CONF_DIR / "pipeline" / f"{pipeline}.yaml").architecture
        shutil.copytree(random_weights_dir(architecture, cache_dir), out / bundled_model(pipeline))


def _write_coverage(path: Path, grid, budgets, entries, missing) -> None:
    reasons = {(g.pipeline, g.scheduler, g.steps, g.quality_budget): g.reason for g in missing}
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            [
                "pipeline",
                "scheduler",
                "steps",
                "quality_budget",
                "batch_size",
                "best_speedup",
                "accel",
                "budget_metric",
                "loss",
                "reason",
            ]
        )
        for pipeline, scheduler, steps in grid:
            for budget in budgets:
                found = [
                    e
                    for e in entries
                    if (e.pipeline, e.scheduler, e.steps, e.quality_budget) == (pipeline, scheduler, steps, budget)
                ]
                for e in found:
                    writer.writerow(
                        [
                            pipeline,
                            scheduler,
                            steps,
                            budget,
                            e.batch_size,
                            e.speedup,
                            e.accel,
                            e.budget_metric,
                            e.loss,
                            "",
                        ]
                    )
                if not found:
                    writer.writerow(
                        [
                            pipeline,
                            scheduler,
                            steps,
                            budget,
                            "",
                            "",
                            "",
                            "",
                            "",
                            reasons[(pipeline, scheduler, steps, budget)],
                        ]
                    )
