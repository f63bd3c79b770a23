"""The manifest as the evaluator reads it: every task checked before anything runs, in prompt-id order.

A manifest is post-process's, but a researcher may cut it down or write one by hand (a subset of
tasks, another baseline); a task the evaluator cannot judge is one line naming the task, the key and
what it may hold, not a traceback half-way through a session that already measured other tasks.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from ..config import group_options
from ..errors import ConfigError, is_integer, is_number
from ..metrics import BUDGET_METRICS
from .bar import MARGIN

PIPELINES = tuple(group_options("pipeline"))

_PATHS = (
    "path_to_gt_code",
    "path_to_reference_baseline",
    "path_to_gen_code_baseline",
    "path_to_gen_code",
    "path_to_metrics",
)


def _relative(value: Any) -> bool:
    """Inside the manifest's folder (or the code folder): relative, never climbing out of it."""
    return (
        isinstance(value, str)
        and value != ""
        and not PurePosixPath(value).is_absolute()
        and ".." not in Path(value).parts
    )


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "prompt_id": (lambda v: isinstance(v, str) and v.isdigit(), "a task number as a string, e.g. '12'"),
    "task_key": (lambda v: isinstance(v, str) and v != "", "a string"),
    "difficulty": (lambda v: isinstance(v, str) and v != "", "a string"),
    "pipeline": (lambda v: v in PIPELINES, " | ".join(PIPELINES)),
    "steps": (lambda v: is_integer(v) and v >= 1, "an integer >= 1"),
    "resolution": (lambda v: is_integer(v) and v >= 8 and v % 8 == 0, "an integer >= 8, a multiple of 8"),
    "batch_size": (lambda v: is_integer(v) and v >= 1, "an integer >= 1"),
    "target_speedup": (lambda v: is_number(v) and v > 0, "a speedup > 0"),
    "quality_budget": (lambda v: is_number(v) and v >= 0, "a budget >= 0 on the task's budget_metric"),
    **{key: (_relative, "a relative path inside the folder it names, no '..'") for key in _PATHS},
}
_OPTIONAL: dict[str, tuple[Callable[[Any], bool], str]] = {
    "budget_metric": (lambda v: v in BUDGET_METRICS, " | ".join(BUDGET_METRICS)),
    "bar": (
        lambda v: isinstance(v, dict) and MARGIN.holds(v.get("margin_db")),
        f"an object whose margin_db is {MARGIN.allowed}",
    ),
}
WRITTEN_BY = "a manifest.json written by accel_bench.postprocess"


def read_manifest(path: Path) -> list[dict[str, Any]]:
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
    seen = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise refuse(f"task {index} is a {type(entry).__name__}, not an object")
        for key, (valid, allowed) in _RULES.items():
            if key not in entry:
                raise refuse(f"task {index} has no {key!r}")
            if not valid(entry[key]):
                raise refuse(f"task {index}'s {key}={entry[key]!r}: {allowed}")
        for key, (valid, allowed) in _OPTIONAL.items():
            if key in entry and not valid(entry[key]):
                raise refuse(f"task {index}'s {key}={entry[key]!r}: {allowed}")
        if entry["prompt_id"] in seen:
            raise refuse(f"task {index}'s prompt_id={entry['prompt_id']!r} is another task's too")
        seen.add(entry["prompt_id"])
    return sorted(entries, key=lambda entry: int(entry["prompt_id"]))
