"""T-GATE: compute cross-attention until the gate step, then reuse it (and drop classifier-free guidance).

On a compiled UNet, the sampling loop's per-step forwards are made stable (``StableForwards``).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import weakref
from dataclasses import dataclass
from types import MethodType
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import ConfigError
from ..limits import Limit, limited
from .base import Accelerator, Code, Target, with_global

# tgate's sampling loop and the loader that binds it, per (pipeline family, DeepCache active). The
# DeepCache variants reset the DeepCache helper at the gate, where the batch halves as guidance is dropped.
_VARIANTS = {
    ("sd", False): ("tgate.SD", "TgateSDLoader"),
    ("sd", True): ("tgate.SD_DeepCache", "TgateSDDeepCacheLoader"),
    ("sdxl", False): ("tgate.SDXL", "TgateSDXLLoader"),
    ("sdxl", True): ("tgate.SDXL_DeepCache", "TgateSDXLDeepCacheLoader"),
}


class StableForwards:
    """T-GATE's sampling loop on a compiled UNet: at every step tgate's ``register_forward`` gives every
    Attention module a new forward closure over the step's flags, and dynamo, which guards on each
    forward's identity, recompiles the UNet at every step until it gives up. ``register`` stands in
    for it in the loop: the first time a set of flags comes, tgate's own function makes the forwards;
    after that, the same forwards are put back. The UNet is then traced once per phase of T-GATE's
    schedule (warm-up, caching or reusing self-attention, the gate, after it): a bounded number."""

    # per UNet, kept across applications (a measured pass re-applies the methods, and new forwards
    # would retrace every phase at every pass); each forward closes over its module and flags only
    _FORWARDS: "weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], list[tuple[Any, Any]]]]" = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, unet: Any):
        from tgate import tgate_utils

        self.register_forward = tgate_utils.register_forward
        self.forwards = self._FORWARDS.setdefault(unet, {})
        self.attention = [m for m in unet.modules() if type(m).__name__ == "Attention"]  # what tgate's loops patch

    def register(
        self,
        model: Any,
        filter_name: str = "Attention",
        keep_shape: bool = True,
        sa_kward: Any = None,
        ca_kward: Any = None,
    ) -> int:
        key = (filter_name, keep_shape, tuple(sorted(sa_kward.items())), tuple(sorted(ca_kward.items())))
        if key not in self.forwards:
            self.register_forward(model, filter_name, keep_shape=keep_shape, sa_kward=sa_kward, ca_kward=ca_kward)
            self.forwards[key] = [(m, m.forward) for m in model.modules() if type(m).__name__ == filter_name]
        for module, forward in self.forwards[key]:
            module.forward = forward
        return len(self.forwards[key])

    def clear_caches(self) -> None:
        """A pipeline call starts with no attention cached (each is cached before it is reused), so
        the first steps' graphs see the same inputs at every call, the first call included."""
        for module in self.attention:
            module.cache = None


@dataclass(frozen=True)
class TGateParams:
    sp_interval: int = limited(dataclasses.MISSING, Limit(1))
    fi_interval: int = limited(dataclasses.MISSING, Limit(1))
    warm_up: int = limited(dataclasses.MISSING, Limit(0))
    gate_step: Optional[int] = limited(None, Limit(0, nullable=True))  # in denoising steps (at most steps)
    # or relative: gate_step = round(gate_fraction * steps)
    gate_fraction: Optional[float] = limited(
        None, Limit(0, 1, integer=False, nullable=True, unit="a fraction of the steps")
    )


def gate_step_for(params: TGateParams, steps: int) -> int:
    if params.gate_fraction is not None:
        return round(params.gate_fraction * steps)
    return params.gate_step


class TGate(Accelerator):
    name = "tgate"
    label = "T-GATE"
    Params = TGateParams
    order = 30  # after DeepCache: its sampling loop binds to the DeepCache helper
    constants = {
        "gate_step": "GATE_STEP",
        "sp_interval": "SP_INTERVAL",
        "fi_interval": "FI_INTERVAL",
        "warm_up": "WARM_UP",
    }
    # cross-attention cached from an earlier step; self-attention cached at longer intervals, after fewer
    # warm-up steps
    faster = {"gate_step": -1, "gate_fraction": -1, "sp_interval": 1, "fi_interval": 1, "warm_up": -1}

    @classmethod
    def check(cls, params: TGateParams, target: Target) -> None:
        if (params.gate_step is None) == (params.gate_fraction is None):
            raise ConfigError(
                "accel.gate_step",
                params.gate_step,
                f"exactly one of gate_step (steps) and gate_fraction (of the steps) set; gate_fraction={params.gate_fraction}",
            )
        if params.gate_step is not None and params.gate_step > target.steps:
            raise ConfigError("accel.gate_step", params.gate_step, f"0..{target.steps} (steps={target.steps})")

    @property
    def gate_step(self) -> int:
        return gate_step_for(self.params, self.target.steps)

    def record(self) -> dict[str, Any]:
        return {**super().record(), "gate_step": self.gate_step}

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        deepcache = active.get("deepcache")
        self.module = importlib.import_module(_VARIANTS[(self.target.family, deepcache is not None)][0])
        self.stable: Optional[StableForwards] = None
        # The tgate loaders would do this binding too, but its DeepCache loaders also create and
        # enable a second DeepCache helper; bind the sampling loop to the helper we already hold.
        pipe.tgate = MethodType(self.module.tgate, pipe)
        if deepcache is not None:
            pipe.deepcache = deepcache.helper

    def graph_safe(self, pipe: Any) -> Optional[Callable[[tuple, dict], None]]:
        self.stable = StableForwards(pipe.unet)
        pipe.tgate = MethodType(with_global(self.module.tgate, "register_forward", self.stable.register), pipe)
        return None

    def reset(self, pipe: Any, seed: int) -> None:
        if self.stable is not None:
            self.stable.clear_caches()

    def remove(self, pipe: Any) -> None:
        # tgate leaves every Attention module's forward patched and its cache attribute set;
        # the pipeline snapshot taken by `applied` restores those, and the attributes set here.
        del pipe.tgate
        pipe.__dict__.pop("deepcache", None)

    @classmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        deepcache = "deepcache" in methods
        loader = _VARIANTS[(family, deepcache)][1]
        args = ", cache_interval=CACHE_INTERVAL, cache_branch_id=CACHE_BRANCH_ID" if deepcache else ""
        return Code(
            imports=(f"from tgate import {loader}",),
            load=(f"    pipe = {loader}(pipe{args})  # adds pipe.tgate{'; enables DeepCache' if deepcache else ''}",),
            call="pipe.tgate",
            call_kwargs=tuple(f"{key}={name}" for key, name in cls.constants.items()),
        )

    @classmethod
    def no_code(cls, methods: Sequence[str], params: Mapping[str, Any]) -> Optional[str]:
        if "compile" in methods and "unet" in params.get("compile_targets", []):
            return "T-GATE on a compiled UNet keeps its loop's forwards per phase (StableForwards), which generated code does not carry"
        return None

    def entry_point(self, pipe: Any) -> Optional[Callable[..., Any]]:
        p = self.params
        return functools.partial(
            pipe.tgate,
            gate_step=self.gate_step,
            sp_interval=p.sp_interval,
            fi_interval=p.fi_interval,
            warm_up=p.warm_up,
        )
