"""Score code files fairly: baseline vs ground truth vs candidate, each in its own process.

    python -m accel_bench.evaluate manifest=dataset/manifest.json code_dir=agent_outputs/
    python -m accel_bench.evaluate baseline=a.py candidate=b.py steps=25 pipeline=sd15

Every file runs in a subprocess (``worker``) with a time limit, through the same ``measure`` as
``run.py``: the same prompts, per-image seeds, batch size, warm-up and resolution on every side.
A file that raises, hangs, exits or returns the wrong thing gets a ``failed`` record with the
reason; the others are still evaluated.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from omegaconf import OmegaConf

from ..config import CONF_DIR, ClipConfig, PipelineConfig, PromptsConfig, resolve_device, resolve_repeats, warmup_policy
from ..errors import ConfigError
from ..measure import Measurement, speedup_ratios
from ..metrics import choose_clip, clip_scorer, psnr_db, ssim, to_uint8
from ..pipelines import random_weights_dir
from ..prompts import load_prompts
from .codefile import code_identity, declared_steps

PIPELINES = ("tiny", "tiny_xl", "sd15", "sd21", "sdxl")


@dataclass
class EvaluateConfig:
    manifest: Optional[str] = None
    code_dir: Optional[str] = None
    baseline: Optional[str] = None
    candidate: Optional[str] = None
    pipeline: Optional[PipelineConfig] = None  # pair mode: the config group option, e.g. pipeline=sd15
    steps: Optional[int] = None
    target_speedup: Optional[float] = None
    quality_budget: Optional[float] = None
    out_dir: Optional[str] = None
    models: Dict[str, str] = field(default_factory=lambda: {name: "auto" for name in PIPELINES})
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    num_prompts: int = 8
    batch_size: Optional[int] = None
    seed: int = 0
    warmup_batches: Any = "auto"  # as in run.py: until stable on a GPU, 1 on CPU
    warmup_tolerance: float = 0.02
    warmup_max_batches: int = 10
    repeats: Any = "auto"  # 3 on a GPU, 1 on CPU: pass/fail is decided on the median
    device: str = "auto"
    dtype: str = "auto"
    count_flops: bool = False
    timeout_s: int = 900
    save_images: bool = False
    clip: ClipConfig = field(default_factory=ClipConfig)
    cache_dir: str = "~/.cache/accel_bench"


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


@dataclass
class FileRun:
    """One code file measured in its own process."""

    path: str
    status: str  # ok | failed
    error: Optional[str] = None
    measurement: Optional[Measurement] = None  # with the images


def model_location(pipeline: str, models: Any, cache_dir: str) -> tuple[str, str]:
    """(what ``load_pipeline(model_id=...)`` gets, its weights): hub id, local folder or random build."""
    if pipeline not in PIPELINES:
        raise ConfigError("pipeline", pipeline, " | ".join(PIPELINES))
    spec = OmegaConf.load(CONF_DIR / "pipeline" / f"{pipeline}.yaml")
    choice = models.get(pipeline, "auto")
    if choice == "auto":
        choice = spec.model_id or "random"
    if choice == "random":
        return str(random_weights_dir(spec.architecture, cache_dir)), "random"
    return choice, "pretrained"


def run_file(code_path: Path, *, model_id: str, steps: Optional[int], resolution: Optional[int], prompts: list[str], batch_size: int, cfg: Any) -> FileRun:
    """Measure one file in a subprocess; every way it can go wrong becomes a failed FileRun."""
    if not code_path.is_file():
        return FileRun(str(code_path), "failed", f"missing file {code_path}")
    with tempfile.TemporaryDirectory(prefix="accel_bench_eval_") as work:
        device = resolve_device(cfg.device)
        warmup = warmup_policy(cfg, device)
        request = {
            "code_path": str(code_path.resolve()), "model_id": model_id, "steps": steps, "resolution": resolution,
            "prompts": prompts, "batch_size": batch_size, "seed": cfg.seed, "warmup_batches": warmup.batches,
            "warmup_tolerance": warmup.tolerance, "warmup_max_batches": warmup.max_batches,
            "repeats": resolve_repeats(cfg.repeats, device), "device": device, "dtype": cfg.dtype,
            "count_flops": cfg.count_flops, "out_dir": work,
        }
        (Path(work) / "request.json").write_text(json.dumps(request))
        process = subprocess.Popen(
            [sys.executable, "-m", "accel_bench.evaluate.worker", str(Path(work) / "request.json")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        try:
            log, _ = process.communicate(timeout=cfg.timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return FileRun(str(code_path), "failed", f"timed out after {cfg.timeout_s} s")
        result_path = Path(work) / "result.json"
        if not result_path.exists():
            tail = " ".join(log.strip().splitlines()[-3:])
            return FileRun(str(code_path), "failed", f"the process exited with code {process.returncode} without a result: {tail}")
        result = json.loads(result_path.read_text())
        if result["status"] != "ok":
            return FileRun(str(code_path), "failed", result["error"])
        images = np.load(Path(work) / "images.npz")["images"]
        return FileRun(str(code_path), "ok", measurement=Measurement(images=images, **result["measurement"]))


def compare(base: FileRun, side: FileRun, base_scores: Optional[np.ndarray], scorer: Any, prompts: list[str],
            target_speedup: Optional[float], quality_budget: Optional[float]) -> dict[str, Any]:
    record: dict[str, Any] = {
        "status": "failed", "error": None, "speedup": None, "clip_loss": None, "psnr_db": None, "ssim": None,
        "speedup_min": None, "speedup_max": None, "repeats": None, "latency_spread": None, "base_latency_spread": None,
        "latency_s": None, "base_latency_s": None, "clip_score": None, "base_clip_score": None,
        "target_speedup": target_speedup, "quality_budget": quality_budget, "passed": False, "path": side.path,
    }
    if base.status != "ok":
        record["error"] = f"baseline failed: {base.error}"
        return record
    if side.status != "ok":
        record["error"] = side.error
        return record
    b, s = base.measurement, side.measurement
    base_clip = float(base_scores.mean())
    clip = float(scorer.scores(s.images, prompts).mean())
    ratios = speedup_ratios(b, s)
    record.update(
        status="ok", speedup=statistics.median(ratios), speedup_min=min(ratios), speedup_max=max(ratios), repeats=len(ratios),
        latency_spread=s.latency_spread, base_latency_spread=b.latency_spread, latency_s=s.latency_s, base_latency_s=b.latency_s,
        clip_score=clip, base_clip_score=base_clip, clip_loss=(base_clip - clip) / base_clip if base_clip else None,
        psnr_db=float(np.mean(psnr_db(b.images, s.images))), ssim=float(np.mean(ssim(b.images, s.images, scorer.device))),
    )
    if target_speedup is None or quality_budget is None:
        record["passed"] = None  # no task to pass
    else:
        record["passed"] = bool(record["speedup"] >= target_speedup and record["clip_loss"] is not None and record["clip_loss"] <= quality_budget)
    return record


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=float) + "\n"


def _save_images(folder: Path, runs: dict[str, FileRun]) -> None:
    from PIL import Image

    for label, run in runs.items():
        if run.status == "ok":
            (folder / label).mkdir(parents=True, exist_ok=True)
            for index, pixels in enumerate(to_uint8(run.measurement.images)):
                Image.fromarray(pixels).save(folder / label / f"{index:04d}.png")


class Evaluator:
    """Holds what all comparisons share: prompts, the CLIP scorer, measured baselines."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.prompts = load_prompts(cfg.prompts)[: cfg.num_prompts]
        self.device = torch.device(resolve_device(cfg.device))
        self._references: dict[str, FileRun] = {}
        self._scores: dict[str, Optional[np.ndarray]] = {}

    def scorer(self, weights: str):
        choice = choose_clip(self.cfg.clip.model, self.cfg.clip.pretrained, weights)
        return clip_scorer(choice, self.device, self.cfg.clip.batch_size)

    def _key(self, path: Path, settings: dict[str, Any]) -> str:
        code = code_identity(path) if path.is_file() else str(path)
        return hashlib.sha1((code + json.dumps(settings, sort_keys=True)).encode()).hexdigest()

    def _measured_once(self, key: str, path: Path, settings: dict[str, Any]) -> FileRun:
        if key not in self._references:
            self._references[key] = run_file(path, prompts=self.prompts, cfg=self.cfg, **settings)
        return self._references[key]

    def reference(self, path: Path, **settings: Any) -> FileRun:
        """Reference files (baselines, ground truth) are measured once per distinct code and settings:
        the tasks of one entry share their ground-truth code, whatever their docstrings say."""
        return self._measured_once(self._key(path, settings), path, settings)

    def baseline(self, path: Path, scorer: Any, **settings: Any) -> tuple[FileRun, Optional[np.ndarray]]:
        """A reference run and its per-image CLIP scores, both computed once."""
        key = self._key(path, settings)
        run = self._measured_once(key, path, settings)
        if key not in self._scores:
            self._scores[key] = scorer.scores(run.measurement.images, self.prompts) if run.status == "ok" else None
        return run, self._scores[key]


def check(cfg: Any) -> str:
    """Which mode the config asks for ("manifest" or "pair"), or a ConfigError naming the key."""
    for key, low in (("num_prompts", 1), ("timeout_s", 1)):
        if cfg[key] < low:
            raise ConfigError(key, cfg[key], f"an integer >= {low}")
    for key, low in (("warmup_batches", 0), ("repeats", 1)):
        if cfg[key] != "auto" and (not isinstance(cfg[key], int) or cfg[key] < low):
            raise ConfigError(key, cfg[key], f"auto or an integer >= {low}")
    if cfg.batch_size is not None and cfg.batch_size < 1:
        raise ConfigError("batch_size", cfg.batch_size, "null (the task's) or an integer >= 1")
    load_prompts(cfg.prompts)
    if cfg.manifest is not None:
        if not Path(cfg.manifest).is_file():
            raise ConfigError("manifest", cfg.manifest, "an existing manifest.json written by accel_bench.postprocess")
        if cfg.code_dir is None or not Path(cfg.code_dir).is_dir():
            raise ConfigError("code_dir", cfg.code_dir, "the folder holding {id}_experiment.py files")
        return "manifest"
    for key in ("baseline", "candidate"):
        if cfg[key] is None or not Path(cfg[key]).is_file():
            raise ConfigError(key, cfg[key], "an existing Python file (or give manifest=... code_dir=...)")
    if cfg.pipeline is None:
        raise ConfigError("pipeline", None, f"the pipeline whose model the files get: {' | '.join(PIPELINES)}")
    return "pair"


def evaluate_manifest(cfg: Any) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    manifest_path = Path(cfg.manifest)
    root, code_dir = manifest_path.parent, Path(cfg.code_dir)
    out_dir = Path(cfg.out_dir or cfg.code_dir)
    entries = sorted(json.loads(manifest_path.read_text()), key=lambda e: int(e["prompt_id"]))
    evaluator = Evaluator(cfg)
    rows = []
    for entry in tqdm(entries, desc="evaluate", unit="task"):
        model_id, weights = model_location(entry["pipeline"], cfg.models, cfg.cache_dir)
        scorer = evaluator.scorer(weights)
        settings = dict(model_id=model_id, steps=entry["steps"], resolution=entry["resolution"], batch_size=cfg.batch_size or entry["batch_size"])
        own_baseline = code_dir / entry["path_to_gen_code_baseline"]
        base_path = own_baseline if own_baseline.is_file() else root / entry["path_to_reference_baseline"]
        base, base_scores = evaluator.baseline(base_path, scorer, **settings)
        gt = evaluator.reference(root / entry["path_to_gt_code"], **settings)
        candidate = run_file(code_dir / entry["path_to_gen_code"], prompts=evaluator.prompts, cfg=cfg, **settings)
        target, budget = entry["target_speedup"], entry["quality_budget"]
        metrics = {
            "prompt_id": entry["prompt_id"],
            "task_key": entry["task_key"],
            **compare(base, candidate, base_scores, scorer, evaluator.prompts, target, budget),
            "gt": compare(base, gt, base_scores, scorer, evaluator.prompts, target, budget),
            "baseline": {"path": base.path, "status": base.status, "error": base.error,
                         "latency_s": base.measurement.latency_s if base.measurement else None},
            "model_weights": weights,
            "num_images": len(evaluator.prompts),
            "batch_size": settings["batch_size"],
        }
        metrics_path = out_dir / entry["path_to_metrics"]
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        metrics_path.write_text(_json(metrics))
        if cfg.save_images:
            _save_images(out_dir / "images" / entry["prompt_id"], {"baseline": base, "gt": gt, "candidate": candidate})
        rows.append({
            "prompt_id": entry["prompt_id"], "task_key": entry["task_key"], "difficulty": entry["difficulty"],
            "target_speedup": target, "quality_budget": budget, "status": metrics["status"], "speedup": metrics["speedup"],
            "clip_loss": metrics["clip_loss"], "passed": metrics["passed"], "gt_status": metrics["gt"]["status"],
            "gt_speedup": metrics["gt"]["speedup"], "gt_clip_loss": metrics["gt"]["clip_loss"], "gt_passed": metrics["gt"]["passed"],
            "error": metrics["error"], "model_weights": weights,
        })
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "evaluation.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["prompt_id"])
        writer.writeheader()
        writer.writerows(rows)
    return rows


def evaluate_pair(cfg: Any) -> dict[str, Any]:
    """One candidate file against one baseline file."""
    model_id, weights = model_location(cfg.pipeline.name, cfg.models, cfg.cache_dir)
    resolution = cfg.pipeline.resolution
    evaluator = Evaluator(cfg)
    scorer = evaluator.scorer(weights)
    runs = {}
    for label in ("baseline", "candidate"):
        path = Path(cfg[label])
        steps = declared_steps(path) or cfg.steps  # a file's own step count, else the task's
        settings = dict(model_id=model_id, steps=steps, resolution=resolution, batch_size=cfg.batch_size or 4)
        runs[label] = evaluator.baseline(path, scorer, **settings) if label == "baseline" else (run_file(path, prompts=evaluator.prompts, cfg=cfg, **settings), None)
    (base, base_scores), (candidate, _) = runs["baseline"], runs["candidate"]
    metrics = {**compare(base, candidate, base_scores, scorer, evaluator.prompts, cfg.target_speedup, cfg.quality_budget),
               "baseline": {"path": base.path, "status": base.status, "error": base.error}, "model_weights": weights}
    out_dir = Path(cfg.out_dir or "evaluation")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(_json(metrics))
    if cfg.save_images:
        _save_images(out_dir / "images", {"baseline": base, "candidate": candidate})
    return metrics
