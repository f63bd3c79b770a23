"""The interface every acceleration method implements, and what it may know about its target."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Optional


@dataclass(frozen=True)
class Target:
    """What a method's parameters are checked against, known before any weights load."""

    pipeline: str  # the pipeline config's name, for messages
    family: str  # "sd" (SD1.x / SD2.x layout) or "sdxl"
    down_blocks: int  # len(unet.down_blocks)
    steps: int
    device: str = "cpu"  # the device type the run resolves to: cpu | cuda


class Accelerator(ABC):
    """One method as a plug-in: check its parameters, apply it to a pipeline, undo it.

    ``apply`` and ``remove`` act on the same pipeline object; a composition applies several
    methods in ``ORDER`` and removes them in reverse (see ``accelerators.applied``).
    """

    name: ClassVar[str]
    label: ClassVar[str]  # the name researchers use, e.g. "T-GATE"
    Params: ClassVar[type]  # a dataclass: the method's parameters, named as in its package

    def __init__(self, params: Any, target: Target):
        self.params = params
        self.target = target

    @classmethod
    def params_from(cls, values: Mapping[str, Any]) -> Any:
        return cls.Params(**{f.name: values[f.name] for f in dataclasses.fields(cls.Params)})

    @classmethod
    def required(cls) -> list[str]:
        """Parameters that must have a value (those without a default in ``Params``)."""
        return [f.name for f in dataclasses.fields(cls.Params) if f.default is dataclasses.MISSING]

    def record(self) -> dict[str, Any]:
        """The values that ran, as rows record them (unset optional parameters left out)."""
        return {k: v for k, v in dataclasses.asdict(self.params).items() if v is not None}

    @classmethod
    @abstractmethod
    def check(cls, params: Any, target: Target) -> None:
        """Raise ConfigError for a value this method cannot run with on ``target``."""

    @abstractmethod
    def apply(self, pipe: Any, active: Mapping[str, "Accelerator"]) -> None:
        """Patch ``pipe``; ``active`` holds the methods applied before this one, by name."""

    @abstractmethod
    def remove(self, pipe: Any) -> None:
        """Undo ``apply`` with the package's own means."""

    def reset(self, pipe: Any, seed: int) -> None:
        """Put per-call state (caches, random generators) into a state fixed by ``seed``."""

    def entry_point(self, pipe: Any) -> Optional[Callable[..., Any]]:
        """The callable that generates images instead of ``pipe(...)``, if the method needs one."""
        return None
