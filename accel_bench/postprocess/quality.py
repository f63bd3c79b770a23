"""The quality stage of ``confirm=true``: each selected configuration and its baseline generate images for
many prompts (``quality_prompts``), cached on disk so an interrupted stage resumes, then FID of the
accelerated images against the baseline's for the same prompts and seeds, and optionally against a
folder of reference images the user brings."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..images import to_uint8
from ..measure import prompt_generators, prompt_seed
from ..metrics.fid import fid, fid_weights_label, image_files
from ..record import RESULT_FILE
from .records import Measured

QUALITY_DIR = "quality"  # in out_dir: baseline-<key>/ and <run id>-<prompts>/, one PNG per prompt


@dataclass(frozen=True)
class Quality:
    fid: Optional[float]  # accelerated against the baseline's images, same prompts and seeds
    fid_reference: Optional[float]  # accelerated against the user's reference folder (fid_reference_dir)
    base_fid_reference: Optional[float]  # the baseline against that folder: what the accelerated one is next to
    lpips: Optional[float]  # mean LPIPS of each accelerated image against the baseline's, over all prompts
    images: int
    weights: str  # what extracted the features
    seconds: float  # this configuration's stage: generation (what the cache lacked) and FID


def generate_cached(
    folder: Path,
    prompts: Sequence[str],
    generate: Callable[[list[str], list[Any]], np.ndarray],
    reset: Callable[[int], None],
    batch_size: int,
    seed: int,
    label: str,
) -> list[Path]:
    """One PNG per prompt in ``folder``, generated batch by batch with the run's per-prompt seeds;
    batches already on disk are skipped, so a stage cut short resumes where it stopped."""
    from PIL import Image
    from tqdm.auto import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / f"{index:05d}.png" for index in range(len(prompts))]
    for start in tqdm(range(0, len(prompts), batch_size), desc=label, unit="batch"):
        batch = files[start : start + batch_size]
        if all(p.exists() for p in batch):
            continue
        reset(prompt_seed(seed, start))
        images = generate(list(prompts[start : start + batch_size]), prompt_generators(seed, start, len(batch)))
        for path, pixels in zip(batch, to_uint8(images)):
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(pixels).save(tmp)
            tmp.replace(path)
    return files


def _key(config: Any, prompts: Sequence[str]) -> str:
    """What makes the baseline's images what they are (entries of one combination share them)."""
    from omegaconf import OmegaConf

    fields = {k: OmegaConf.to_container(config, resolve=True).get(k) for k in ("pipeline", "scheduler", "baseline")}
    fields.update({k: config[k] for k in ("steps", "seed", "guidance_scale", "resolution", "dtype", "device")})
    fields["prompts"] = list(prompts)
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _digest(prompts: Sequence[str]) -> str:
    return hashlib.sha1(json.dumps(list(prompts)).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Generated:
    """A selected configuration's images and its baseline's, one file per prompt, same seeds."""

    baseline: list[Path]
    accelerated: list[Path]
    prompts: list[str]
    device: Any


def generate_pair(m: Measured, root: Path, prompts: Optional[Sequence[str]], batch_size: Optional[int]) -> Generated:
    """Generate (or find cached under ``root``) the images of row ``m``'s configuration and of its baseline
    for ``prompts`` (None: the run's own prompts), with the run's per-prompt seeds."""
    from omegaconf import OmegaConf

    from .. import accelerators, experiment
    from .. import config as run_config
    from ..config import RunConfig

    stored = json.loads((Path(m.run_dir) / RESULT_FILE).read_text())["config"]
    config = OmegaConf.merge(OmegaConf.structured(RunConfig), stored)
    checked = run_config.check(config)
    prompts = list(checked.prompts if prompts is None else prompts)
    prepared = experiment.prepare_pipeline(config, device=checked.device)
    folders = (root / f"baseline-{_key(config, prompts)}", root / f"{m.run_id}-{_digest(prompts)}")
    files = []
    for label, folder, methods in zip(("baseline", m.accel), folders, (checked.base_methods, checked.methods)):
        with accelerators.applied(prepared.loaded.pipe, methods) as applied:
            call = experiment.pipeline_call(applied, config, prepared.resolution)
            size = batch_size or config.batch_size
            files.append(
                generate_cached(folder, prompts, call, applied.reset, size, config.seed, f"{m.run_id} {label}")
            )
    return Generated(files[0], files[1], prompts, prepared.device)


def _lpips(made: Generated, pretrained: bool, batch_size: int = 16) -> float:
    """LPIPS (the run metrics' network: AlexNet, ImageNet backbone for real weights) over every pair."""
    from PIL import Image

    from ..metrics.perceptual import lpips_distances, lpips_network

    network = lpips_network("alex", pretrained, made.device)
    found = []
    for start in range(0, len(made.baseline), batch_size):
        pairs = zip(made.baseline[start : start + batch_size], made.accelerated[start : start + batch_size])
        base, mine = zip(*((np.asarray(Image.open(b)), np.asarray(Image.open(a))) for b, a in pairs))
        found.append(lpips_distances(network, np.stack(base) / 255.0, np.stack(mine) / 255.0, batch_size))
    return float(np.concatenate(found).mean())


def measure_quality(
    entries: Sequence[Measured],
    out_dir: Path,
    prompts: Sequence[str],
    fid_weights: str,
    reference_dir: Optional[Path],
    batch_size: Optional[int],
) -> dict[str, Quality]:
    """Per selected configuration (run id): its images and its baseline's for ``prompts``, and their FID."""
    import torch

    found: dict[str, Quality] = {}
    reference = image_files(reference_dir) if reference_dir is not None else []
    for m in sorted({m.run_id: m for m in entries}.values(), key=lambda m: m.run_id):
        began = time.perf_counter()
        made = generate_pair(m, out_dir / QUALITY_DIR, prompts, batch_size)
        pretrained = fid_weights == "pretrained" or (fid_weights == "auto" and m.weights == "pretrained")
        device = made.device
        found[m.run_id] = Quality(
            fid=fid(made.baseline, made.accelerated, pretrained, device),
            lpips=_lpips(made, m.weights == "pretrained"),
            fid_reference=fid(reference, made.accelerated, pretrained, device) if reference else None,
            base_fid_reference=fid(reference, made.baseline, pretrained, device) if reference else None,
            images=len(prompts),
            weights=fid_weights_label(pretrained),
            seconds=time.perf_counter() - began,
        )
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return found
