"""The interface every quality metric implements: one module per metric, as accelerators are."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class Scored:
    """A metric's values for one comparison, by the row's column names (``base_`` for the baseline side)."""

    values: dict[str, float]
    weights: str  # what scored them: a network and its weights, or "none" for a formula


class Metric(ABC):
    """Scores accelerated images against the baseline's for the same prompts and seeds (or the prompts).

    A subclass names itself, the row columns it fills, and the one column a quality budget may bound
    (larger is worse; ``None``: not a budget metric). ``reference`` runs once per baseline (a
    sweep reuses it across jobs); ``score`` once per comparison.
    """

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    budget_column: ClassVar[Optional[str]] = None
    budget_label: ClassVar[str] = ""  # how a budget on it reads: "CLIP loss", "LPIPS"

    @classmethod
    def check(cls, section: Any, chosen: bool) -> None:
        """Raise ConfigError for a value of the metric's config section (``cfg.clip``, ...) that cannot
        run; ``chosen``: the run scores with this metric (what only scoring reads is checked then)."""

    @classmethod
    def min_side(cls, section: Any) -> int:
        """The smallest image side (px) it can score: a network's pooling or a window needs some."""
        return 1

    @property
    @abstractmethod
    def weights(self) -> str:
        """What scores: a network and its weights (``.../random`` where they are random), or ``none``."""

    def reference(self, base_images: np.ndarray, prompts: Sequence[str]) -> Any:
        """What the baseline's images give once, for every comparison against them."""
        return None

    @abstractmethod
    def score(self, base_images: np.ndarray, images: np.ndarray, prompts: Sequence[str], reference: Any) -> Scored:
        """``images`` and ``base_images`` are [0, 1] arrays (N, H, W, 3), image i of each from prompt i."""
