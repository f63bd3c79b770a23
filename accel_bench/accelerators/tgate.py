"""T-GATE: compute cross-attention until ``gate_step``, then reuse it (and drop classifier-free guidance)."""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from types import MethodType
from typing import Any, Callable, Mapping, Optional

from ..errors import ConfigError
from .base import Accelerator, Target

# tgate's sampling loop per (pipeline family, DeepCache active). The DeepCache variants reset the
# DeepCache helper at the gate, where the batch halves as guidance is dropped.
_SAMPLING_MODULES = {
    ("sd", False): "tgate.SD",
    ("sd", True): "tgate.SD_DeepCache",
    ("sdxl", False): "tgate.SDXL",
    ("sdxl", True): "tgate.SDXL_DeepCache",
}


@dataclass(frozen=True)
class TGateParams:
    gate_step: int
    sp_interval: int
    fi_interval: int
    warm_up: int


class TGate(Accelerator):
    name = "tgate"
    label = "T-GATE"
    Params = TGateParams

    @classmethod
    def check(cls, params: TGateParams, target: Target) -> None:
        if not 0 <= params.gate_step <= target.steps:
            raise ConfigError("accel.gate_step", params.gate_step, f"0..{target.steps} (steps={target.steps})")
        for key in ("sp_interval", "fi_interval"):
            if getattr(params, key) < 1:
                raise ConfigError(f"accel.{key}", getattr(params, key), "an integer >= 1")
        if params.warm_up < 0:
            raise ConfigError("accel.warm_up", params.warm_up, "an integer >= 0")

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        deepcache = active.get("deepcache")
        module = importlib.import_module(_SAMPLING_MODULES[(self.target.family, deepcache is not None)])
        # The tgate loaders would do this binding too, but its DeepCache loaders also create and
        # enable a second DeepCache helper; bind the sampling loop to the helper we already hold.
        pipe.tgate = MethodType(module.tgate, pipe)
        if deepcache is not None:
            pipe.deepcache = deepcache.helper

    def remove(self, pipe: Any) -> None:
        # tgate leaves every Attention module's forward patched and its cache attribute set;
        # the pipeline snapshot taken by `applied` restores those, and the attributes set here.
        del pipe.tgate
        pipe.__dict__.pop("deepcache", None)

    def entry_point(self, pipe: Any) -> Optional[Callable[..., Any]]:
        p = self.params
        return functools.partial(
            pipe.tgate, gate_step=p.gate_step, sp_interval=p.sp_interval, fi_interval=p.fi_interval, warm_up=p.warm_up
        )
