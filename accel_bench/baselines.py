"""Baselines measured once: kept per process, and shared on disk by a sweep's parallel jobs.

The key holds everything that changes a baseline measurement (pipeline, scheduler, steps,
batching, prompts, seed, warm-up, device, dtype, guidance, resolution, FLOP counting, the metrics and
their weights). On disk the first job to take a key's file lock measures; the others wait and load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from filelock import FileLock

from .measure import Measurement
from .watch.checks import PassCheck

_IN_PROCESS: dict[str, "Baseline"] = {}


@dataclass(frozen=True)
class Baseline:
    measurement: Measurement
    references: dict[str, np.ndarray]  # metric name -> what it computed once from these images (Metric.reference)


def baseline_key(**fields: Any) -> str:
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _save(folder: Path, key: str, baseline: Baseline) -> None:
    m = baseline.measurement
    timings = {f.name: getattr(m, f.name) for f in dataclasses.fields(m) if f.name not in ("images", "checks")}
    timings["checks"] = [dataclasses.asdict(check) for check in m.checks]
    references = {f"reference_{name}": value for name, value in baseline.references.items()}
    np.savez(folder / f"{key}.tmp.npz", images=m.images, **references)
    (folder / f"{key}.tmp.npz").replace(folder / f"{key}.npz")
    (folder / f"{key}.json").write_text(json.dumps(timings, indent=1) + "\n")  # written last: marks it complete


def _load(folder: Path, key: str) -> Optional[Baseline]:
    if not (folder / f"{key}.json").exists():
        return None
    timings = json.loads((folder / f"{key}.json").read_text())
    timings["checks"] = [PassCheck.from_json(check) for check in timings.get("checks", [])]
    arrays = np.load(folder / f"{key}.npz")
    references = {name.removeprefix("reference_"): arrays[name] for name in arrays.files if name != "images"}
    return Baseline(Measurement(images=arrays["images"], **timings), references)


def get_or_measure(
    key: str, measure_baseline: Callable[[], Baseline], folder: Optional[Path] = None
) -> tuple[Baseline, bool]:
    """The baseline for ``key`` and whether it was reused (measured earlier, here or by another job)."""
    if key in _IN_PROCESS:
        return _IN_PROCESS[key], True
    if folder is None:
        baseline, reused = measure_baseline(), False
    else:
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder / f"{key}.lock")):
            baseline = _load(folder, key)
            reused = baseline is not None
            if baseline is None:
                baseline = measure_baseline()
                _save(folder, key, baseline)
    _IN_PROCESS[key] = baseline
    return baseline, reused
