"""ToMe for SD (tomesd): merge redundant tokens before self-attention in the UNet's transformer blocks.

Eager, tomesd runs as it is; on a compiled UNet its per-call Python moves to the host (``tome_graphs``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from ..errors import ConfigError
from ..limits import Limit, limited
from .base import Accelerator, Code, Target
from .tome_graphs import GraphSafeToMe

MAX_DOWNSAMPLES = (1, 2, 4, 8)


@dataclass(frozen=True)
class ToMeParams:
    # of the tokens merged; at most 1 - 1/(sx*sy), where tomesd would cap it silently
    ratio: float = limited(dataclasses.MISSING, Limit(0, 1, integer=False, below=True))
    max_downsample: int = limited(dataclasses.MISSING, Limit(1, choices=MAX_DOWNSAMPLES))
    sx: int = limited(dataclasses.MISSING, Limit(1))
    sy: int = limited(dataclasses.MISSING, Limit(1))
    use_rand: bool


class ToMe(Accelerator):
    name = "tome"
    label = "ToMe"
    Params = ToMeParams
    order = 20
    constants = {"ratio": "RATIO", "max_downsample": "MAX_DOWNSAMPLE", "sx": "SX", "sy": "SY", "use_rand": "USE_RAND"}
    faster = {"ratio": 1, "max_downsample": 1}  # more tokens merged, in more of the UNet's levels

    @classmethod
    def check(cls, params: ToMeParams, target: Target) -> None:
        # tomesd caps the ratio silently at 1 - 1/(sx*sy); refuse instead of measuring something else.
        cap = 1 - 1 / (params.sx * params.sy)
        if not 0 <= params.ratio <= cap:
            raise ConfigError(
                "accel.ratio",
                params.ratio,
                f"0 <= ratio <= {cap:g} (= 1 - 1/(sx*sy) with sx={params.sx}, sy={params.sy})",
            )
        if target.family == "sdxl" and params.max_downsample == 1:
            raise ConfigError(
                "accel.max_downsample",
                params.max_downsample,
                f"2, 4 or 8 on pipeline={target.pipeline}: its first level has no attention, so 1 merges nothing",
            )

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        import tomesd

        self.graphs: Optional[GraphSafeToMe] = None
        self.deepcache = active.get("deepcache")  # its skipped blocks take no draws (tome_graphs)
        tomesd.apply_patch(
            pipe,
            ratio=self.params.ratio,
            max_downsample=self.params.max_downsample,
            sx=self.params.sx,
            sy=self.params.sy,
            use_rand=self.params.use_rand,
        )

    def graph_safe(self, pipe: Any) -> Optional[Callable[[tuple, dict], None]]:
        self.graphs = GraphSafeToMe(pipe.unet, self.deepcache.helper if self.deepcache is not None else None)
        return self.graphs.host_step

    def remove(self, pipe: Any) -> None:
        import tomesd

        if self.graphs is not None:
            self.graphs.remove()
        tomesd.remove_patch(pipe)

    @classmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        return Code(
            imports=("import tomesd",),
            patch=(
                "    tomesd.apply_patch(pipe, ratio=RATIO, max_downsample=MAX_DOWNSAMPLE, sx=SX, sy=SY, use_rand=USE_RAND)",
            ),
        )

    @classmethod
    def no_code(cls, methods: Sequence[str], params: Mapping[str, Any]) -> Optional[str]:
        if "compile" in methods and "unet" in params.get("compile_targets", []):
            return "ToMe on a compiled UNet takes its draws on the host (accelerators/tome_graphs.py), which generated code does not carry"
        return None

    def reset(self, pipe: Any, seed: int) -> None:
        # tomesd forks its generator from the global RNG on first use; seed it instead.
        device = pipe.unet.device
        pipe.unet._tome_info["args"]["generator"] = torch.Generator(device=device).manual_seed(seed)
