"""The manifest's task: one typed record, which post-process writes and the evaluator reads back, every
task checked before anything runs, in prompt-id order.

A manifest is post-process's, but a researcher may cut it down or write one by hand (a subset of
tasks, another baseline); a task the evaluator cannot judge is one line naming the task, the key and
what it may hold, not a traceback half-way through a session that already measured other tasks.
Each field says what it may hold where it is declared (``_judged``); a hand-written task needs the
judged fields, and the rest (what post-process records for a reader) may be left out.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Optional, Sequence

from ..config import group_options
from ..errors import ConfigError, is_integer, is_number
from ..metrics import BUDGET_METRICS
from .bar import MARGIN

PIPELINES = tuple(group_options("pipeline"))
WRITTEN_BY = "a manifest.json written by accel_bench.postprocess"
_RULE = "rule"  # the field metadata's key: (holds, what is allowed)


def _relative(value: Any) -> bool:
    """Inside the manifest's folder (or the code folder): relative, never climbing out of it."""
    return (
        isinstance(value, str)
        and value != ""
        and not PurePosixPath(value).is_absolute()
        and ".." not in Path(value).parts
    )


def _judged(holds: Callable[[Any], bool], allowed: str, default: Any = dataclasses.MISSING) -> Any:
    """A field the evaluator judges by: required unless it has a ``default``, checked when present."""
    return field(default=default, metadata={_RULE: (holds, allowed)})


def _path() -> Any:
    return _judged(_relative, "a relative path inside the folder it names, no '..'")


def _text() -> Any:
    return _judged(lambda v: isinstance(v, str) and v != "", "a string")


@dataclass(frozen=True)
class ManifestTask:
    """One task. Paths are relative to the manifest's folder (``path_to_gt_code``,
    ``path_to_reference_baseline``) or to the code folder (the agent's files and its metrics)."""

    prompt_id: str = _judged(lambda v: isinstance(v, str) and v.isdigit(), "a task number as a string, e.g. '12'")
    task_key: str = _text()  # pipeline, sampler and steps, e.g. "SD1.5_DDIM_50"
    difficulty: str = _text()  # easy | medium | hard: the target's factor on the speedup found
    pipeline: str = _judged(lambda v: v in PIPELINES, " | ".join(PIPELINES))
    steps: int = _judged(lambda v: is_integer(v) and v >= 1, "an integer >= 1")
    resolution: int = _judged(lambda v: is_integer(v) and v >= 8 and v % 8 == 0, "an integer >= 8, a multiple of 8")
    batch_size: int = _judged(lambda v: is_integer(v) and v >= 1, "an integer >= 1")
    target_speedup: float = _judged(lambda v: is_number(v) and v > 0, "a speedup > 0")
    quality_budget: float = _judged(lambda v: is_number(v) and v >= 0, "a budget >= 0 on the task's budget_metric")
    path_to_gt_code: str = _path()
    path_to_reference_baseline: str = _path()
    path_to_gen_code_baseline: str = _path()  # the agent's own baseline, where it wrote one
    path_to_gen_code: str = _path()
    path_to_metrics: str = _path()
    # what the budget bounds (a manifest written before budgets had a metric: CLIP)
    budget_metric: str = _judged(lambda v: v in BUDGET_METRICS, " | ".join(BUDGET_METRICS), "clip")
    # what fidelity is judged against: {"kind": "floor"} or {"kind": "fewer_steps", "margin_db": ...}
    # (absent: the evaluator's fewer_steps_margin_db)
    bar: Optional[dict[str, Any]] = _judged(
        lambda v: isinstance(v, dict) and MARGIN.holds(v.get("margin_db")),
        f"an object whose margin_db is {MARGIN.allowed}",
        None,
    )
    # What post-process records for a reader; the evaluator judges nothing by them.
    original_filename: Optional[str] = None
    speedup: Optional[float] = None  # the target again, under the name the task's text uses
    category: Optional[str] = None  # the template's name
    prompt_context: Optional[str] = None  # the task's text and the optimizations that reach it
    scheduler: Optional[str] = None
    accel: Optional[str] = None
    methods: Optional[list[str]] = None
    params: Optional[dict[str, Any]] = None
    measured_speedup: Optional[float] = None
    confirmed_speedup: Optional[float] = None
    confirmed_disturbed: Optional[str] = None  # then the target comes from measured_speedup
    measured_clip_loss: Optional[float] = None
    measured_loss: Optional[float] = None  # the budget metric's value
    weights: Optional[str] = None
    run_id: Optional[str] = None
    note: Optional[str] = None  # random weights: what the figures do not measure; written only where set

    @property
    def margin_db(self) -> Optional[float]:
        """The task's fewer-steps margin: ``bar["margin_db"]`` (None: the floor alone)."""
        return None if self.bar is None else self.bar.get("margin_db")

    def to_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        if self.note is None:
            del values["note"]
        return values

    @classmethod
    def from_json(cls, entry: Any, index: int) -> "ManifestTask":
        """Task ``index`` of a manifest, checked; ValueError naming the task and the key otherwise.
        Keys the record does not know are left out (a reader's own notes)."""
        if not isinstance(entry, dict):
            raise ValueError(f"task {index} is a {type(entry).__name__}, not an object")
        for f in dataclasses.fields(cls):
            if _RULE not in f.metadata:
                continue
            holds, allowed = f.metadata[_RULE]
            if f.name not in entry:
                if f.default is dataclasses.MISSING:
                    raise ValueError(f"task {index} has no {f.name!r}")
            elif not holds(entry[f.name]):
                raise ValueError(f"task {index}'s {f.name}={entry[f.name]!r}: {allowed}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in entry.items() if key in known})


def write_manifest(path: Path, tasks: Sequence[ManifestTask]) -> None:
    """The tasks in prompt-id order, keys sorted: the same tasks give the same bytes."""
    ordered = sorted(tasks, key=lambda task: int(task.prompt_id))
    path.write_text(json.dumps([task.to_json() for task in ordered], indent=2, sort_keys=True) + "\n")


def read_manifest(path: Path) -> list[ManifestTask]:
    """The tasks of the manifest at ``path``, sorted by prompt id; ConfigError(manifest) on the first
    thing in it the evaluator cannot judge."""

    def refuse(why: str) -> ConfigError:
        return ConfigError("manifest", str(path), f"{WRITTEN_BY}; {why}")

    if not Path(path).is_file():
        raise ConfigError("manifest", str(path), f"an existing {WRITTEN_BY.removeprefix('a ')}")
    try:
        entries = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise refuse(f"not JSON ({error})") from None
    if not isinstance(entries, list):
        raise refuse(f"a JSON list of tasks, not a {type(entries).__name__}")
    tasks, seen = [], set()
    for index, entry in enumerate(entries):
        try:
            task = ManifestTask.from_json(entry, index)
        except ValueError as error:
            raise refuse(str(error)) from None
        if task.prompt_id in seen:
            raise refuse(f"task {index}'s prompt_id={task.prompt_id!r} is another task's too")
        seen.add(task.prompt_id)
        tasks.append(task)
    return sorted(tasks, key=lambda task: int(task.prompt_id))
