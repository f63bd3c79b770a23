"""The trusted side's orchestration: the comparisons of a manifest or of one pair, measured and recorded."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .. import metrics as metric_plugins
from ..config import resolve_device, resolve_repeats, warmup_policy
from ..prompts import load_prompts
from . import bar, session
from .codefile import code_identity, declared_steps
from .config import model_location
from .file_record import BaselineRecord, EvaluationRow, FileRecord
from .manifest import ManifestTask, read_manifest
from .records import compare, needs_reference
from .sandbox import SandboxInfo
from .session import SideResult, SideSpec


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=float) + "\n"


def _settings(cfg: Any, model_id: str, resolution: int, batch_size: int) -> session.Settings:
    device = resolve_device(cfg.device)
    repeats = resolve_repeats(cfg.repeats, device)
    return session.Settings(
        model_id,
        resolution,
        batch_size,
        device,
        cfg.dtype,
        cfg.seed,
        warmup_policy(cfg, device),
        repeats,
        max(cfg.max_repeats, repeats),
        cfg.timeout_s,
    )


def _scorers(cfg: Any, weights: str, budget_metrics: set[str]) -> list[metric_plugins.Metric]:
    """The configured metrics, and every metric a budget is set on."""
    names = sorted(set(cfg.metrics) | budget_metrics, key=list(metric_plugins.METRICS).index)
    return metric_plugins.build(names, cfg, weights, torch.device(resolve_device(cfg.device)))


def _save_images(folder: Path, results: dict[str, SideResult], batches: int) -> None:
    """The first measured pass of each side (its prompt order is that pass's)."""
    from PIL import Image

    for label, result in results.items():
        if result.measured:
            (folder / label).mkdir(parents=True, exist_ok=True)
            images = np.concatenate([e.images for e in result.measured[:batches]])
            for index, pixels in enumerate(images):
                Image.fromarray(pixels).save(folder / label / f"{index:04d}.png")


def _metrics_json(
    record: FileRecord,
    base: BaselineRecord,
    num_images: int,
    weights: str,
    secret: int,
    info: SandboxInfo,
    settings: session.Settings,
    task: Optional[ManifestTask] = None,
    gt: Optional[FileRecord] = None,
) -> str:
    """A file's ``metrics.json``: its record, the baseline's beside it (and, for a task, the ground
    truth's), and what the comparison ran on."""
    return _json(
        {
            **({"prompt_id": task.prompt_id, "task_key": task.task_key} if task is not None else {}),
            **record.to_json(),
            **({"gt": gt.to_json()} if gt is not None else {}),
            "baseline": base.to_json(),
            "num_images": num_images,
            "model_weights": weights,
            "input_seed": secret,
            "sandbox": dataclasses.asdict(info),
            "batch_size": settings.batch_size,
            "device": settings.device,
        }
    )


def _groups(entries: list[ManifestTask], root: Path, code_dir: Path, cfg: Any) -> dict[str, list[ManifestTask]]:
    """Entries that share baseline code, ground-truth code and settings are measured in one session:
    the ground truth is measured once for the tasks of an entry, whatever their docstrings say."""
    groups: dict[str, list[ManifestTask]] = {}
    for entry in entries:
        base = _baseline_path(entry, root, code_dir)
        key = json.dumps(
            [
                code_identity(base) if base.is_file() else str(base),
                code_identity(root / entry.path_to_gt_code),
                entry.pipeline,
                entry.steps,
                entry.resolution,
                cfg.batch_size or entry.batch_size,
            ]
        )
        groups.setdefault(key, []).append(entry)
    return dict(sorted(groups.items(), key=lambda item: int(item[1][0].prompt_id)))


def _references(
    margin_db: Optional[float],
    sides: list[SideSpec],
    results: dict[str, SideResult],
    settings: session.Settings,
    info: SandboxInfo,
    prompts: list[str],
    secret: int,
) -> dict[str, bar.Reference]:
    """The baseline cut to each file's speed, for files with a task still in the running (None: no bar)."""
    if margin_db is None:
        return {}
    base = results[sides[0].label]
    claims = {}
    for spec in sides[1:]:
        speed = needs_reference(base, results[spec.label], spec.targets)
        if speed is not None:
            claims[spec.label] = bar.Claim(spec, *speed)
    return bar.measure_references(sides[0], claims, settings, info, prompts, secret)


def _margin(cfg: Any, entry: Optional[ManifestTask] = None) -> Optional[float]:
    """A task's margin over its fewer-steps reference: the manifest's, else the config's (null: the floor alone)."""
    if entry is not None and entry.bar is not None:
        return entry.margin_db
    return cfg.fewer_steps_margin_db


NO_BAR = "fewer_steps_margin_db=null: the fidelity floor alone"


def _baseline_path(entry: ManifestTask, root: Path, code_dir: Path) -> Path:
    own = code_dir / entry.path_to_gen_code_baseline
    return own if own.is_file() else root / entry.path_to_reference_baseline


@dataclasses.dataclass
class Judged:
    """One task of a comparison: its entry, the ground truth's record and the candidate's (None when
    only ground truths were measured), and what the comparison ran on."""

    entry: ManifestTask
    gt: FileRecord
    candidate: Optional[FileRecord]
    results: dict[str, SideResult]
    settings: session.Settings
    weights: str
    secret: int


def judge_groups(
    entries: list[ManifestTask],
    root: Path,
    code_dir: Path,
    cfg: Any,
    info: SandboxInfo,
    prompts: list[str],
    candidates: bool,
):
    """Each group of tasks measured in one session (baseline, ground truth and, with ``candidates``, each
    task's file) and judged; yields one ``Judged`` per task, in prompt-id order."""
    from tqdm.auto import tqdm

    for group in tqdm(list(_groups(entries, root, code_dir, cfg).values()), desc="evaluate", unit="comparison"):
        first = group[0]
        model_id, weights = model_location(first.pipeline, cfg.models, cfg.cache_dir)
        settings = _settings(cfg, model_id, first.resolution, cfg.batch_size or first.batch_size)
        steps = first.steps
        sides = [
            SideSpec("baseline", _baseline_path(first, root, code_dir), steps),
            SideSpec("gt", root / first.path_to_gt_code, steps, tuple(sorted({e.target_speedup for e in group}))),
        ]
        if candidates:
            sides += [
                SideSpec(f"candidate {e.prompt_id}", code_dir / e.path_to_gen_code, steps, (e.target_speedup,))
                for e in group
            ]
        results, secret = session.run(sides, settings, info, prompts, cfg.input_seed)
        margin = _margin(cfg, first)
        references = _references(margin, sides, results, settings, info, prompts, secret)
        scorers = _scorers(cfg, weights, {e.budget_metric for e in group})
        base = results["baseline"]
        for entry in group:
            target, budget = entry.target_speedup, entry.quality_budget
            label = f"candidate {entry.prompt_id}"
            judged = dict(
                min_psnr_db=cfg.min_psnr_db,
                margin_db=margin or 0.0,
                no_reference="" if margin is not None else NO_BAR,
                budget_metric=entry.budget_metric,
            )
            yield Judged(
                entry,
                compare(base, results["gt"], scorers, target, budget, reference=references.get("gt"), **judged),
                compare(base, results[label], scorers, target, budget, reference=references.get(label), **judged)
                if candidates
                else None,
                results,
                settings,
                weights,
                secret,
            )


def judge_ground_truths(cfg: Any, info: SandboxInfo, only: Optional[Sequence[str]] = None) -> dict[str, FileRecord]:
    """The ground truth of each task of ``cfg.manifest`` (or of those ``only`` names) judged as a candidate
    would be (its speed, images, budget and bar) against its reference baseline: the records by prompt
    id. No candidate files run."""
    manifest_path = Path(cfg.manifest)
    prompts = load_prompts(cfg.prompts)[: cfg.num_prompts]
    entries = [e for e in read_manifest(manifest_path) if only is None or e.prompt_id in only]
    judged = judge_groups(entries, manifest_path.parent, manifest_path.parent, cfg, info, prompts, candidates=False)
    return {j.entry.prompt_id: j.gt for j in judged}


def evaluate_manifest(cfg: Any, info: SandboxInfo) -> list[EvaluationRow]:
    manifest_path = Path(cfg.manifest)
    root, code_dir = manifest_path.parent, Path(cfg.code_dir)
    out_dir = Path(cfg.out_dir or cfg.code_dir)
    prompts = load_prompts(cfg.prompts)[: cfg.num_prompts]
    entries = read_manifest(manifest_path)
    rows = []
    for j in judge_groups(entries, root, code_dir, cfg, info, prompts, candidates=True):
        entry, results, settings, weights = j.entry, j.results, j.settings, j.weights
        base, candidate = results["baseline"], results[f"candidate {entry.prompt_id}"]
        metrics_path = out_dir / entry.path_to_metrics
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text(
            _metrics_json(
                j.candidate, BaselineRecord.of(base), len(prompts), weights, j.secret, info, settings, entry, j.gt
            )
        )
        if cfg.save_images:
            chosen = {"baseline": base, "gt": results["gt"], "candidate": candidate}
            _save_images(out_dir / "images" / entry.prompt_id, chosen, -(-len(prompts) // settings.batch_size))
        rows.append(EvaluationRow.of(entry, j.candidate, j.gt, weights, info.kind))
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "evaluation.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=EvaluationRow.columns() if rows else ["prompt_id"])
        writer.writeheader()
        writer.writerows(dataclasses.asdict(row) for row in rows)
    return rows


@dataclasses.dataclass
class PairResult:
    """One pair's evaluation: the candidate's record, the baseline's, and what weights the model had."""

    record: FileRecord
    baseline: BaselineRecord
    weights: str


def evaluate_pair(cfg: Any, info: SandboxInfo) -> PairResult:
    """One candidate file against one baseline file; each file's own step count, else ``steps``."""
    model_id, weights = model_location(cfg.pipeline.name, cfg.models, cfg.cache_dir)
    prompts = load_prompts(cfg.prompts)[: cfg.num_prompts]
    settings = _settings(cfg, model_id, cfg.pipeline.resolution, cfg.batch_size or 4)
    targets = () if cfg.target_speedup is None else (cfg.target_speedup,)
    sides = [
        SideSpec(
            label,
            Path(cfg[label]),
            declared_steps(Path(cfg[label])) or cfg.steps,
            targets if label == "candidate" else (),
        )
        for label in ("baseline", "candidate")
    ]
    results, secret = session.run(sides, settings, info, prompts, cfg.input_seed)
    margin = _margin(cfg)
    references = _references(margin, sides, results, settings, info, prompts, secret)
    scorers = _scorers(cfg, weights, {cfg.budget_metric} if cfg.quality_budget is not None else set())
    base = results["baseline"]
    record = compare(
        base,
        results["candidate"],
        scorers,
        cfg.target_speedup,
        cfg.quality_budget,
        cfg.min_psnr_db,
        budget_metric=cfg.budget_metric,
        reference=references.get("candidate"),
        margin_db=margin or 0.0,
        no_reference="" if margin is not None else NO_BAR,
    )
    baseline = BaselineRecord.of(base)
    out_dir = Path(cfg.out_dir or "evaluation")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(
        _metrics_json(record, baseline, len(prompts), weights, secret, info, settings)
    )
    if cfg.save_images:
        _save_images(out_dir / "images", results, -(-len(prompts) // settings.batch_size))
    return PairResult(record, baseline, weights)
