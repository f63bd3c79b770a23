from __future__ import annotations

import json
import os

import numpy as np
import open_clip
import pytest
import torch

from accel_bench.config import compose_run_config
from accel_bench.pipelines import (
    architecture_config,
    clip_tokenizer,
    is_local_path,
    random_weights_dir,
    random_weights_name,
    set_scheduler,
)
from accel_bench.record import read_frame

from .conftest import FAST, run_cli


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# The published models' parameter counts: the bundled configs must give these architectures.
PUBLISHED = {
    "sd15": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    "sd21": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    "sdxl": {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480, "text_encoder_2": 694_659_840},
}


@pytest.mark.parametrize("architecture", sorted(PUBLISHED))
def test_bundled_architectures_match_the_published_models(architecture):
    import diffusers
    import transformers

    counts = {}
    with torch.device("meta"):  # shapes only: no memory, no time
        counts["unet"] = _parameters(
            diffusers.UNet2DConditionModel.from_config(architecture_config(architecture, "unet"))
        )
        counts["vae"] = _parameters(diffusers.AutoencoderKL.from_config(architecture_config(architecture, "vae")))
        for name in ("text_encoder", "text_encoder_2"):
            if name in PUBLISHED[architecture]:
                config = architecture_config(architecture, name)
                model_class = getattr(transformers, config["architectures"][0])
                counts[name] = _parameters(model_class(transformers.CLIPTextConfig(**config)))
    assert counts == PUBLISHED[architecture]


def test_tokenizer_is_real_clip_bpe():
    text = "A photo of a cat, highly-detailed! 42 ..."
    ours = clip_tokenizer("<|endoftext|>")(text).input_ids
    reference = open_clip.get_tokenizer("ViT-B-32")([text])[0].tolist()
    assert ours == reference[: len(ours)] and reference[len(ours)] == 0
    assert len(clip_tokenizer("!").get_vocab()) == 49408
    assert clip_tokenizer("!")("a", padding="max_length", max_length=5).input_ids == [49406, 320, 49407, 0, 0]


def test_local_path_or_hub_id():
    assert not is_local_path("stabilityai/stable-diffusion-xl-base-1.0")
    assert not is_local_path("runwayml-sd")
    assert is_local_path("./models/sd15") and is_local_path("/abs/path") and is_local_path("a/b/c")


def test_random_weights_are_written_once(tmp_path):
    first = random_weights_dir("tiny", str(tmp_path))
    stamp = os.path.getmtime(first / "model_index.json")
    assert random_weights_dir("tiny", str(tmp_path)) == first
    assert os.path.getmtime(first / "model_index.json") == stamp
    assert [p.name for p in (tmp_path / "pipelines").iterdir()] == [first.name]  # no staging left behind
    index = json.loads((first / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"


def test_random_weights_of_another_builder_or_device_are_not_reused(tmp_path, monkeypatch):
    from importlib import metadata

    built = random_weights_dir("tiny", str(tmp_path))
    assert random_weights_name("tiny", "cuda:1") != built.name  # CUDA's generator draws other weights
    assert random_weights_name("tiny", "cuda:0") == random_weights_name("tiny", "cuda:1")
    installed = metadata.version

    def other_torch(package):
        return "0.0.1" if package == "torch" else installed(package)

    monkeypatch.setattr(metadata, "version", other_torch)
    assert random_weights_name("tiny") != built.name
    monkeypatch.undo()
    assert random_weights_name("tiny") == built.name


@pytest.mark.parametrize(
    "scheduler, class_name",
    [("ddim", "DDIMScheduler"), ("dpmsolver", "DPMSolverMultistepScheduler"), ("unipc", "UniPCMultistepScheduler")],
)
@pytest.mark.parametrize("pipeline", ["tiny", "tiny_xl"])
def test_every_scheduler_runs(pipes, pipeline, scheduler, class_name):
    pipe = pipes[pipeline]
    set_scheduler(pipe, compose_run_config([f"scheduler={scheduler}"]).scheduler)
    assert type(pipe.scheduler).__name__ == class_name
    if scheduler == "dpmsolver":
        assert pipe.scheduler.config.algorithm_type == "dpmsolver++"
    images = pipe(
        prompt=["a cat"], generator=[torch.Generator().manual_seed(0)], num_inference_steps=3, output_type="np"
    ).images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
    assert len(pipe.scheduler.timesteps) == 3


def test_local_folder_goes_through_from_pretrained(tmp_path, tiny_pipe):
    """A user's local folder, as written by save_pretrained, loads as the configured pipeline."""
    folder = tmp_path / "my-sd15"
    tiny_pipe.save_pretrained(folder)
    summary = tmp_path / "summary.csv"
    result = run_cli(
        [
            "pipeline=sd15",
            f"pipeline.model_id={folder}",
            "resolution=64",
            "clip.model=tiny",
            "lpips.backbone=random",  # the ImageNet backbone would be downloaded for pretrained weights
            *FAST,
            f"summary_path={summary}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]

    row = read_frame(summary).iloc[0]
    assert (row.status, row.pipeline, row.weights, row.model_source) == ("ok", "sd15", "pretrained", str(folder))
    assert row.clip_weights == "random"


def test_vae_cast_warnings_are_dropped_and_other_warnings_kept(tiny_xl_pipe):
    import logging

    logger = logging.getLogger("diffusers.models.modeling_utils")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        tiny_xl_pipe.vae.to(torch.float32)  # what SDXL's decode does around every batch in fp16
        logger.warning("another diffusers warning")
    finally:
        logger.removeHandler(handler)
    assert seen == ["another diffusers warning"]
