"""CLIP score (open_clip) of each image against its prompt: the accelerated side's loss against the baseline's."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import ConfigError
from ..images import to_uint8
from ..limits import Limit, check_limits, limited
from .base import Metric, Scored

TINY_CLIP = "accel-bench-tiny-clip"  # a small randomly initialised CLIP for tiny / random-weight runs
TINY_CLIP_CONFIG = Path(__file__).parent.parent / "model_configs" / "clip" / f"{TINY_CLIP}.json"
# DeepCache's evaluation protocol, for pipelines with real weights.
PRETRAINED_CLIP = ("ViT-g-14", "laion2b_s34b_b88k")


@dataclass
class ClipConfig:
    model: str = "auto"  # auto | tiny | an open_clip model name
    pretrained: Optional[str] = None  # open_clip pretrained tag; null = random init
    batch_size: int = limited(16, Limit(1))


@dataclass(frozen=True)
class ClipChoice:
    model: str
    pretrained: Optional[str]  # None: random initialisation (seeded)

    @property
    def weights(self) -> str:
        return "pretrained" if self.pretrained else "random"

    @property
    def label(self) -> str:
        return f"{self.model}/{self.pretrained}" if self.pretrained else self.model


def choose_clip(model: str, pretrained: Optional[str], pipeline_weights: str) -> ClipChoice:
    """``auto``: ViT-g-14 for real weights; for random weights a real CLIP would score noise anyway."""
    if model == "auto":
        return ClipChoice(*PRETRAINED_CLIP) if pipeline_weights == "pretrained" else ClipChoice(TINY_CLIP, None)
    if model == "tiny":
        return ClipChoice(TINY_CLIP, None)
    return ClipChoice(model, pretrained)


class ClipScorer:
    """100 x cosine of L2-normalised image and text embeddings, clamped at 0, per image."""

    def __init__(self, choice: ClipChoice, device: torch.device, batch_size: int = 16):
        import open_clip

        if choice.model == TINY_CLIP:
            open_clip.add_model_config(TINY_CLIP_CONFIG)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a random CLIP is the same random CLIP every run
            model, _, self.preprocess = open_clip.create_model_and_transforms(
                choice.model, pretrained=choice.pretrained
            )
        self.model = model.to(device).eval()
        self.tokenizer = open_clip.get_tokenizer(choice.model)
        self.device = device
        self.batch_size = batch_size

    @torch.no_grad()
    def scores(self, images: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        pixels = to_uint8(images)
        result = []
        for start in range(0, len(prompts), self.batch_size):
            batch = slice(start, start + self.batch_size)
            image_input = torch.stack([self.preprocess(Image.fromarray(p)) for p in pixels[batch]]).to(self.device)
            text_input = self.tokenizer(list(prompts[batch])).to(self.device)
            image_features = F.normalize(self.model.encode_image(image_input).float(), dim=-1)
            text_features = F.normalize(self.model.encode_text(text_input).float(), dim=-1)
            result.append((100 * (image_features * text_features).sum(-1)).clamp(min=0).cpu().numpy())
        return np.concatenate(result)


@functools.lru_cache(maxsize=None)
def clip_scorer(choice: ClipChoice, device: torch.device, batch_size: int) -> ClipScorer:
    """One scorer per process and model: a sweep loads ViT-g-14 once."""
    return ClipScorer(choice, device, batch_size)


class Clip(Metric):
    """``clip_loss`` = (base CLIP - accelerated CLIP) / base CLIP, the quality loss DeepCache reports."""

    name = "clip"
    columns = ("clip_score", "base_clip_score", "clip_loss", "clip_model", "clip_weights")
    budget_column = "clip_loss"
    budget_label = "CLIP loss"

    @classmethod
    def check(cls, section: Any, chosen: bool) -> None:
        check_limits(section, ClipConfig, "clip.")
        if section.model in ("auto", "tiny"):
            if section.pretrained is not None:
                allowed = (
                    f"null with clip.model={section.model} (it picks its own weights; name a model to choose them)"
                )
                raise ConfigError("clip.pretrained", section.pretrained, allowed)
            return
        if not chosen or section.model.startswith("hf-hub:"):
            return  # a hub model's weights and config come with it, read when it loads
        import open_clip

        models = open_clip.list_models()
        if section.model not in models:
            raise ConfigError(
                "clip.model",
                section.model,
                f"auto | tiny | hf-hub:<repo> | an open_clip model ({', '.join(models[:4])}, ...: open_clip.list_models())",
            )
        tags = open_clip.list_pretrained_tags_by_model(section.model)
        if section.pretrained is not None and section.pretrained not in tags and not Path(section.pretrained).is_file():
            allowed = (
                f"null (random), a checkpoint file or a tag of {section.model}: {' | '.join(tags) or 'none published'}"
            )
            raise ConfigError("clip.pretrained", section.pretrained, allowed)

    def __init__(self, cfg: Any, pipeline_weights: str, device: torch.device):
        self.choice = choose_clip(cfg.model, cfg.pretrained, pipeline_weights)
        self.scorer = clip_scorer(self.choice, device, cfg.batch_size)

    @property
    def weights(self) -> str:
        return self.choice.label if self.choice.pretrained else f"{self.choice.model}/random"

    def reference(self, base_images: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
        return self.scorer.scores(base_images, prompts)

    def score(self, base_images: np.ndarray, images: np.ndarray, prompts: Sequence[str], reference: Any) -> Scored:
        base = float(np.mean(self.reference(base_images, prompts) if reference is None else reference))
        mine = float(self.scorer.scores(images, prompts).mean())
        return Scored(
            {
                "clip_score": mine,
                "base_clip_score": base,
                "clip_loss": (base - mine) / base if base else None,
                "clip_model": self.choice.label,
                "clip_weights": self.choice.weights,
            },
            self.weights,
        )
