"""Images as users save them: every side is compared on the same 8-bit pixels."""

from __future__ import annotations

import numpy as np


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Pipeline floats in [0, 1] to the 8-bit pixels a user saves (NaN from fp16 overflow -> 0)."""
    return (np.nan_to_num(images, nan=0.0).clip(0, 1) * 255).round().astype(np.uint8)
