"""DeepCache: reuse the UNet's deep features for ``cache_interval - 1`` of every ``cache_interval`` steps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from ..limits import Limit, limited
from .base import Accelerator, Code, Target

BRANCHES_PER_DOWN_BLOCK = 3  # DeepCacheSDHelper: block = branch_id // 3, layer = branch_id % 3


@dataclass(frozen=True)
class DeepCacheParams:
    cache_interval: int = limited(dataclasses.MISSING, Limit(1, meaning="1 skips nothing"))
    # the cached branch's depth: 3 per down block of the UNet (checked against the pipeline's)
    cache_branch_id: int = limited(dataclasses.MISSING, Limit(0))


class DeepCache(Accelerator):
    name = "deepcache"
    label = "DeepCache"
    Params = DeepCacheParams
    order = 10
    constants = {"cache_interval": "CACHE_INTERVAL", "cache_branch_id": "CACHE_BRANCH_ID"}
    faster = {"cache_interval": 1, "cache_branch_id": -1}  # fewer full steps; a shallower cached branch

    @classmethod
    def check(cls, params: DeepCacheParams, target: Target) -> None:
        last = BRANCHES_PER_DOWN_BLOCK * target.down_blocks - 1
        if not 0 <= params.cache_branch_id <= last:
            raise ConfigError(
                "accel.cache_branch_id",
                params.cache_branch_id,
                f"0..{last} for pipeline={target.pipeline} ({target.down_blocks} down blocks x {BRANCHES_PER_DOWN_BLOCK})",
            )

    def apply(self, pipe: Any, active: Mapping[str, Accelerator]) -> None:
        from DeepCache import DeepCacheSDHelper

        self.helper = DeepCacheSDHelper(pipe=pipe)
        self.helper.set_params(cache_interval=self.params.cache_interval, cache_branch_id=self.params.cache_branch_id)
        self.helper.enable()

    def remove(self, pipe: Any) -> None:
        self.helper.disable()

    @classmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        if "tgate" in methods:
            return Code()  # T-GATE's DeepCache loader enables it, with these constants
        return Code(
            imports=("from DeepCache import DeepCacheSDHelper",),
            load=(
                "    pipe.deepcache = DeepCacheSDHelper(pipe=pipe)",
                "    pipe.deepcache.set_params(cache_interval=CACHE_INTERVAL, cache_branch_id=CACHE_BRANCH_ID)",
                "    pipe.deepcache.enable()",
            ),
        )

    def reset(self, pipe: Any, seed: int) -> None:
        # The step count enable() starts from, set in place: re-enabling would wrap every block anew,
        # and new wrappers make a compiled UNet retrace (see cached_steps). The cache is kept: the
        # first step is always a full one and overwrites it, and an emptied cache is a new graph too.
        self.helper.cur_timestep, self.helper.start_timestep = 0, None
