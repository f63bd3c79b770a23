"""Packing sweep jobs into tasks: jobs that share a pipeline run in one process, which loads it once.

A task is one process on a cluster node (or one local process). Starting it, importing torch and
loading the pipeline cost the same whether it then runs one job or ten, and the baseline of jobs
that share their pipeline, scheduler, steps and batching is measured once per process. So the
launchers hand each task up to ``jobs_per_task`` jobs that share the pipeline.

Jobs share a pipeline when their overrides agree on every key that decides which pipeline object
is loaded (``PIPELINE_KEYS``): every other value is the same for all jobs of a sweep, since only
overrides differ between them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

PIPELINE_KEYS = ("pipeline", "dtype", "device", "cache_dir")  # and every pipeline.* key
_ACCEL = "accel"


@dataclass(frozen=True)
class Job:
    num: int  # Hydra's job number: its run dir and its place in the sweep's results
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Pack:
    """The jobs one task runs, in the order it runs them."""

    index: int
    jobs: tuple[Job, ...]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _section(override: str) -> str:
    return _key(override).split(".", 1)[0]


def pipeline_key(overrides: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(o for o in overrides if _section(o) in PIPELINE_KEYS))


def baseline_order(overrides: Sequence[str]) -> tuple[str, ...]:
    """Everything but the accelerator: jobs next to each other in a pack reuse one baseline."""
    return tuple(sorted(o for o in overrides if _section(o) != _ACCEL))


def pack_jobs(jobs: Sequence[Job], jobs_per_task: int) -> list[Pack]:
    """Groups by pipeline (in order of first appearance), then packs of up to ``jobs_per_task`` jobs,
    sorted within a group so that jobs sharing a baseline sit together. Deterministic."""
    if jobs_per_task < 1:
        raise ValueError(f"jobs_per_task={jobs_per_task} must be >= 1")
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(pipeline_key(job.overrides), []).append(job)
    packs: list[Pack] = []
    for jobs in groups.values():
        jobs = sorted(jobs, key=lambda job: (baseline_order(job.overrides), job.num))
        for start in range(0, len(jobs), jobs_per_task):
            packs.append(Pack(len(packs), tuple(jobs[start : start + jobs_per_task])))
    return packs
