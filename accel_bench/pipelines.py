"""Pipelines: random-weight builds of bundled architectures, loading with ``from_pretrained``, schedulers.

There is one loading path: ``from_pretrained`` on a hub id or a local folder. Random-weight
pipelines (``tiny``, ``tiny_xl``, and ``weights=random`` for SD1.5 / SD2.1 / SDXL) are built once
from the JSON configs under ``model_configs/``, written with ``save_pretrained`` into a cache
folder, and then loaded through that same path.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

MODEL_CONFIGS = Path(__file__).parent / "model_configs"
RANDOM_WEIGHTS_FORMAT = "v1"  # bump when the bundled configs or the build change
RANDOM_WEIGHTS_SEED = 0
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


def architecture_config(architecture: str, component: str) -> dict[str, Any]:
    return json.loads((MODEL_CONFIGS / architecture / f"{component}.json").read_text())


def is_local_path(model_id: str | None) -> bool:
    """A local folder if it exists or is written like a path; otherwise a hub id (``org/name``)."""
    if not model_id:
        return False
    return os.path.isdir(os.path.expanduser(model_id)) or not _HUB_ID.match(model_id) or model_id.startswith(".")


@functools.lru_cache(maxsize=None)
def _clip_bpe() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP's byte-pair vocabulary, rebuilt from the BPE merges that open_clip ships."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1])
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {token: index for index, token in enumerate(tokens)}, merges


def clip_tokenizer(pad_token: str):
    """A real CLIP tokenizer (49408 tokens, 77 positions), built offline."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), pad_token=pad_token, model_max_length=77)


def build_random_pipeline(architecture: str, device: str = "cpu"):
    """The architecture's pipeline with seeded random weights (initialised on ``device``)."""
    import diffusers
    import transformers

    spec = architecture_config(architecture, "pipeline")
    components: dict[str, Any] = {}
    cuda_devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        with torch.device(device):
            components["unet"] = diffusers.UNet2DConditionModel.from_config(architecture_config(architecture, "unet"))
            components["vae"] = diffusers.AutoencoderKL.from_config(architecture_config(architecture, "vae"))
            for name in ("text_encoder", "text_encoder_2"):
                if not (MODEL_CONFIGS / architecture / f"{name}.json").exists():
                    continue
                config = architecture_config(architecture, name)
                model_class = getattr(transformers, config["architectures"][0])
                components[name] = model_class(transformers.CLIPTextConfig(**config))
    scheduler_config = architecture_config(architecture, "scheduler")
    components["scheduler"] = getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    for name, pad_token in spec["tokenizer_pad_tokens"].items():
        components[name] = clip_tokenizer(pad_token)
    pipeline_class = getattr(diffusers, spec["_class_name"])
    if spec["_class_name"] == "StableDiffusionPipeline":
        components.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    return pipeline_class(**components)


def random_weights_name(architecture: str, device: str = "cpu") -> str:
    """The random-weight folder's name: everything that decides the weights. A seeded draw depends on
    the device it runs on (CPU and CUDA generators differ) and on the libraries' initialisers, so a
    folder built by another torch, diffusers or transformers, or on another device, is never reused."""
    from importlib import metadata

    builder = " ".join(f"{package}=={metadata.version(package)}" for package in ("torch", "diffusers", "transformers"))
    digest = hashlib.sha256(builder.encode()).hexdigest()[:10]
    init = torch.device(device).type
    return f"{architecture}-random-seed{RANDOM_WEIGHTS_SEED}-{RANDOM_WEIGHTS_FORMAT}-{init}-{digest}"


def random_weights_dir(architecture: str, cache_dir: str, device: str = "cpu") -> Path:
    """The folder holding the architecture's random-weight pipeline, written once per machine."""
    root = Path(cache_dir).expanduser() / "pipelines"
    final = root / random_weights_name(architecture, device)
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=root))
    try:
        pipe = build_random_pipeline(architecture, device)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.half()  # random weights: fp16 halves the disk and the load time
        pipe.save_pretrained(staging)
        os.replace(staging, final)  # atomic: concurrent builders never see half a folder
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


@dataclass
class LoadedPipeline:
    pipe: Any
    source: str  # the hub id or folder from_pretrained read
    load_s: float  # seconds to load it; 0 when this process already had it
    scheduler_config: Any  # as loaded: every scheduler swap starts from it


_LOADED: dict[tuple, LoadedPipeline] = {}


def cached_pipeline(pipeline: Mapping[str, Any], device: str, dtype: torch.dtype, cache_dir: str) -> LoadedPipeline:
    """Load each distinct pipeline once per process (a sweep's jobs share it)."""
    key = (
        pipeline["family"],
        pipeline["weights"],
        pipeline["architecture"],
        pipeline["model_id"],
        device,
        str(dtype),
        cache_dir,
    )
    if key in _LOADED:
        return dataclasses.replace(_LOADED[key], load_s=0.0)
    pipe, source, load_s = load_pipeline(pipeline, device, dtype, cache_dir)
    _LOADED[key] = LoadedPipeline(pipe, source, load_s, pipe.scheduler.config)
    return _LOADED[key]


def _drop_vae_upcast_warning(record: logging.LogRecord) -> bool:
    """SDXL in fp16 casts its VAE to fp32 and back around every decode (``force_upcast``), as
    diffusers intends, and diffusers warns at each cast: twice per batch, burying the progress."""
    return "should be kept in float32" not in record.getMessage()


def load_pipeline(pipeline: Mapping[str, Any], device: str, dtype: torch.dtype, cache_dir: str):
    """Load the configured pipeline onto ``device``; returns (pipeline, where it came from, seconds)."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()  # measure() shows the progress that matters
    logging.getLogger("diffusers.models.modeling_utils").addFilter(_drop_vae_upcast_warning)
    transformers.utils.logging.disable_progress_bar()
    started = time.perf_counter()
    if pipeline["weights"] == "random":
        source = str(random_weights_dir(pipeline["architecture"], cache_dir, device))
    else:
        source = (
            str(Path(pipeline["model_id"]).expanduser())
            if is_local_path(pipeline["model_id"])
            else pipeline["model_id"]
        )
    pipeline_class = (
        diffusers.StableDiffusionXLPipeline if pipeline["family"] == "sdxl" else diffusers.StableDiffusionPipeline
    )
    extra = {"safety_checker": None, "requires_safety_checker": False} if pipeline["family"] == "sd" else {}
    pipe = pipeline_class.from_pretrained(source, dtype=dtype, **extra)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, source, time.perf_counter() - started


def set_scheduler(pipe: Any, scheduler: Mapping[str, Any], base_config: Any = None) -> None:
    """Swap in the configured sampler, built from the pipeline's own scheduler config."""
    import diffusers

    scheduler_class = getattr(diffusers, scheduler["class_name"])
    pipe.scheduler = scheduler_class.from_config(base_config or pipe.scheduler.config, **dict(scheduler["kwargs"]))
