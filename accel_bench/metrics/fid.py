"""FID (torchmetrics' ``FrechetInceptionDistance``) between two folders of images: a set metric, for the
many images of post-process's quality stage, never a sweep job's few."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

FID_WEIGHTS = ("auto", "pretrained", "random")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


class _RandomInception(torch.nn.Module):
    """torchvision's Inception-v3 with seeded random weights and its 2048-d pool features: FID's
    arithmetic on an untrained network, for random-weight pipelines and tests (labelled so). An
    untrained network's activations have no scale of their own (they grow by ~1e10 through its layers),
    so each feature vector is scaled to unit RMS before the statistics; FID stays finite and readable."""

    num_features = 2048

    def __init__(self) -> None:
        super().__init__()
        import torchvision

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=True)
        self.net.fc = torch.nn.Identity()
        self.net.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # uint8 (N, 3, H, W), as torchmetrics passes them
        x = torch.nn.functional.interpolate(images.float() / 255, size=(299, 299), mode="bilinear")
        features = self.net((x - 0.5) / 0.5).double()
        return (features / features.pow(2).mean(dim=1, keepdim=True).sqrt()).float()


def fid_weights_label(pretrained: bool) -> str:
    return "inception-v3-compat/pt_inception-2015-12-05" if pretrained else "inception-v3/torchvision/random"


def _metric(pretrained: bool, device: torch.device):
    from torchmetrics.image.fid import FrechetInceptionDistance

    # pretrained: torch-fidelity's FID Inception, its weights downloaded the normal way on first use
    feature = 2048 if pretrained else _RandomInception()
    return FrechetInceptionDistance(feature=feature).to(device)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def _batches(files: list[Path], batch_size: int) -> Iterator[torch.Tensor]:
    from PIL import Image

    for start in range(0, len(files), batch_size):
        pixels = [
            np.asarray(Image.open(p).convert("RGB").resize((299, 299))) for p in files[start : start + batch_size]
        ]
        yield torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()


def fid(
    real: list[Path], generated: list[Path], pretrained: bool, device: torch.device, batch_size: int = 32
) -> Optional[float]:
    """FID of ``generated`` images against ``real`` ones (files); None with fewer than two of either."""
    if len(real) < 2 or len(generated) < 2:
        return None
    metric = _metric(pretrained, device)
    with torch.no_grad():
        for files, is_real in ((real, True), (generated, False)):
            for batch in _batches(files, batch_size):
                metric.update(batch.to(device), real=is_real)
        return float(metric.compute())
