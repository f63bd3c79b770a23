"""Tasks from entries and templates; stable, sorted ids; each task's manifest record and the file-id mapping."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from ..accelerators import METHODS
from ..evaluate.manifest import ManifestTask
from .codegen import describe_methods
from .select import RANDOM_NOTE, Entry

DIFFICULTY_FACTORS = (("easy", 0.9), ("medium", 1.0), ("hard", 1.1))


def nearest_half(value: float) -> float:
    return math.floor(value / 0.5 + 0.5) * 0.5  # halves round up, unlike round()


def target_speedups(speedup: float) -> dict[str, float]:
    """The found speedup x0.9, x1.0, x1.1 to the nearest 0.5, kept distinct by moving easy down and
    hard up by 0.5 where rounding made them meet; a target of 1x or less asks nothing and is dropped."""
    targets = {name: nearest_half(factor * speedup) for name, factor in DIFFICULTY_FACTORS}
    targets["easy"] = min(targets["easy"], targets["medium"] - 0.5)
    targets["hard"] = max(targets["hard"], targets["medium"] + 0.5)
    return {name: value for name, value in targets.items() if value > 1.0}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


@dataclass(frozen=True)
class Task:
    entry: Entry
    category: str  # the template's name
    text: str
    target_speedup: float
    difficulty: str
    methods: tuple[str, ...]
    optimizations: str  # e.g. "DeepCache (cache_interval=3, cache_branch_id=0)"

    @property
    def task_key(self) -> str:
        return f"{self.entry.pipeline_label}_{self.entry.scheduler_label}_{self.entry.steps}"

    @property
    def original_filename(self) -> str:
        return f"{_slug(self.text)}__{self.target_speedup:g}x__{self.entry.run_id}.py"

    @property
    def prompt_context(self) -> str:
        return f"{self.text} by applying the following optimizations: {self.optimizations}"

    @property
    def order(self) -> tuple:
        return (self.task_key, self.target_speedup, self.original_filename)


def build_tasks(entries: Sequence[Entry], templates: Mapping[str, str]) -> list[Task]:
    """Tasks for every entry and template; an entry chosen under several budgets counts once, under the tightest."""
    tightest: dict[str, Entry] = {}
    for entry in sorted(entries, key=lambda e: (e.run_id, e.quality_budget)):
        tightest.setdefault(entry.run_id, entry)
    tasks = []
    for entry in sorted(tightest.values(), key=lambda e: (e.pipeline, e.scheduler, e.steps, e.batch_size, e.run_id)):
        labels = " + ".join(METHODS[m].label for m in entry.methods)
        optimizations = describe_methods(entry.methods, entry.params)
        for category in sorted(templates):
            for difficulty, target in target_speedups(entry.target_basis).items():
                text = templates[category].format(
                    pipeline=entry.pipeline_label,
                    sampler=entry.scheduler_label,
                    steps=entry.steps,
                    speedup=f"{target:g}",
                    methods=labels,
                )
                tasks.append(Task(entry, category, text, target, difficulty, tuple(entry.methods), optimizations))
    return sorted(tasks, key=lambda t: t.order)


def assign_ids(tasks: Sequence[Task], start_id: int, existing: Optional[Mapping[str, int]] = None) -> dict[str, int]:
    """Ids in task order from ``start_id``; tasks already in ``existing`` keep theirs, new ones go above the highest."""
    ids = dict(existing or {})
    next_id = max([start_id - 1, *ids.values()]) + 1
    for task in tasks:  # already in (task key, target speedup, file name) order
        if task.original_filename not in ids:
            ids[task.original_filename] = next_id
            next_id += 1
    return ids


def reference_baseline_path(entry: Entry) -> str:
    return f"gt_code/baselines/{entry.pipeline}_{entry.scheduler}_{entry.steps}.py"


def task_bar(margin_db: Optional[float]) -> dict[str, Any]:
    """What a task's fidelity is judged against in the evaluator: the baseline cut to the file's
    speed, beaten by ``margin_db`` of pooled PSNR (null: the evaluator's fidelity floor alone)."""
    return {"kind": "floor"} if margin_db is None else {"kind": "fewer_steps", "margin_db": margin_db}


def manifest_task(task: Task, prompt_id: int, margin_db: Optional[float]) -> ManifestTask:
    e = task.entry
    return ManifestTask(
        original_filename=task.original_filename,
        prompt_id=str(prompt_id),
        task_key=task.task_key,
        speedup=task.target_speedup,
        category=task.category,
        difficulty=task.difficulty,
        prompt_context=task.prompt_context,
        path_to_gt_code=f"gt_code/{prompt_id}.py",
        path_to_gen_code=f"{prompt_id}_experiment.py",
        path_to_gen_code_baseline=f"{prompt_id}_baseline.py",
        path_to_metrics=f"{prompt_id}_metrics.json",
        path_to_reference_baseline=reference_baseline_path(e),
        pipeline=e.pipeline,
        scheduler=e.scheduler,
        steps=e.steps,
        resolution=e.resolution,
        batch_size=e.batch_size,
        quality_budget=e.quality_budget,
        budget_metric=e.budget_metric,
        accel=e.accel,
        methods=list(task.methods),
        params=e.params,
        target_speedup=task.target_speedup,
        measured_speedup=e.speedup,
        confirmed_speedup=e.confirmed_speedup,
        confirmed_disturbed=e.confirmed_disturbed,
        measured_clip_loss=e.clip_loss,
        measured_loss=e.loss,
        weights=e.weights,
        run_id=e.run_id,
        bar=task_bar(margin_db),
        note=RANDOM_NOTE if e.weights == "random" else None,
    )
