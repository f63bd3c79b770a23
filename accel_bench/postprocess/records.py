"""Sweep rows as typed records: the only place post-processing reads a summary CSV."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import pandas as pd

from ..errors import ConfigError
from ..experiment import SWEEP_SUMMARY

REQUIRED = ("status", "pipeline", "pipeline_label", "family", "model_id", "scheduler", "scheduler_class", "scheduler_label",
            "scheduler_kwargs", "steps", "resolution", "guidance_scale", "accel_methods", "batch_size", "accel",
            "accel_params", "speedup", "clip_loss", "psnr_db", "latency_s", "base_latency_s", "weights",
            "clip_weights", "run_id", "device_name", "run_dir")


@dataclass(frozen=True)
class Measured:
    """One ok row of a sweep: a configuration and what it measured."""

    pipeline: str
    pipeline_label: str
    family: str
    model_id: Optional[str]
    scheduler: str
    scheduler_class: str
    scheduler_label: str
    scheduler_kwargs: dict[str, Any]
    steps: int
    resolution: int
    guidance_scale: float
    batch_size: int
    accel: str
    methods: list[str]
    params: dict[str, Any]
    speedup: float
    clip_loss: float
    psnr_db: Optional[float]
    latency_s: float
    base_latency_s: float
    weights: str
    clip_weights: str
    run_id: str
    device_name: str
    run_dir: str  # holds result.json with the full config: what a confirmation re-runs

    @property
    def combination(self) -> tuple[str, str, int]:
        return (self.pipeline, self.scheduler, self.steps)

    @property
    def sort_key(self) -> tuple:
        """A total order: every tie in a selection is broken the same way."""
        return (self.accel, json.dumps(self.params, sort_keys=True), self.run_id)


@dataclass(frozen=True)
class RowStatus:
    """Any row, ok or not, for the coverage report."""

    pipeline: str
    scheduler: str
    steps: int
    status: str
    weights: str


def _optional_float(value: Any) -> Optional[float]:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def read_summaries(sweep_dirs: Iterable[Path]) -> tuple[list[Measured], list[RowStatus]]:
    """The ok rows of every sweep's summary, and the status of every row."""
    measured, statuses = [], []
    for sweep_dir in sorted(Path(d) for d in sweep_dirs):
        path = sweep_dir / SWEEP_SUMMARY
        frame = pd.read_csv(path, dtype={"run_id": str}, keep_default_na=True)
        missing = [c for c in REQUIRED if c not in frame.columns]
        if missing:
            raise ConfigError("sweep_dir", str(sweep_dir), f"a sweep whose summary has the columns {', '.join(missing)} (written by an older accel_bench? re-run the sweep)")
        for row in frame.to_dict("records"):
            baseline = row.get("baseline")
            if isinstance(baseline, str) and baseline != "eager":
                continue  # a speedup over a compiled baseline: the tasks' baseline code is the eager pipeline
            statuses.append(RowStatus(row["pipeline"], row["scheduler"], int(row["steps"]), row["status"], row["weights"]))
            if row["status"] != "ok":
                continue
            methods, params = json.loads(row["accel_methods"]), json.loads(row["accel_params"])
            if {"deepcache", "compile"} <= set(methods) and "unet" in params.get("compile_targets", []):
                continue  # its speed comes from accelerators/cached_steps.py, which generated code does not carry
            measured.append(
                Measured(
                    pipeline=row["pipeline"],
                    pipeline_label=row["pipeline_label"],
                    family=row["family"],
                    model_id=None if pd.isna(row["model_id"]) else str(row["model_id"]),
                    scheduler=row["scheduler"],
                    scheduler_class=row["scheduler_class"],
                    scheduler_label=row["scheduler_label"],
                    scheduler_kwargs=json.loads(row["scheduler_kwargs"]),
                    steps=int(row["steps"]),
                    resolution=int(row["resolution"]),
                    guidance_scale=float(row["guidance_scale"]),
                    batch_size=int(row["batch_size"]),
                    accel=row["accel"],
                    methods=methods,
                    params=params,
                    speedup=float(row["speedup"]),
                    clip_loss=float(row["clip_loss"]),
                    psnr_db=_optional_float(row["psnr_db"]),
                    latency_s=float(row["latency_s"]),
                    base_latency_s=float(row["base_latency_s"]),
                    weights=row["weights"],
                    clip_weights=row["clip_weights"],
                    run_id=str(row["run_id"]),
                    device_name=str(row["device_name"]),
                    run_dir=str(row["run_dir"]),
                )
            )
    return measured, statuses
