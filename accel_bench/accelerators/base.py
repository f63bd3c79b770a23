"""The interface every acceleration method implements, and what it may know about its target."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import FunctionType
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence


def with_global(function: FunctionType, name: str, value: Any) -> FunctionType:
    """A package's ``function`` as it is, but reading ``value`` where its module's global ``name`` is:
    how a method swaps one call inside a package's code for this function only, not the module."""
    replaced = FunctionType(
        function.__code__,
        {**function.__globals__, name: value},
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    replaced.__kwdefaults__ = function.__kwdefaults__
    return replaced


@dataclass(frozen=True)
class Target:
    """What a method's parameters are checked against, known before any weights load."""

    pipeline: str  # the pipeline config's name, for messages
    family: str  # "sd" (SD1.x / SD2.x layout) or "sdxl"
    down_blocks: int  # len(unet.down_blocks)
    steps: int
    device: str = "cpu"  # the device type the run resolves to: cpu | cuda
    capability: Optional[tuple[int, int]] = None  # the GPU's compute capability (major, minor); None on a CPU


@dataclass(frozen=True)
class Code:
    """A method's part of a generated ground-truth file, which uses diffusers and the method's own
    package only. Parameters appear as the module constants ``Accelerator.constants`` names."""

    imports: tuple[str, ...] = ()
    patch: tuple[str, ...] = ()  # load_pipeline lines that patch the model's modules: before every method's ``load``
    load: tuple[str, ...] = ()  # load_pipeline lines after every ``patch``
    call: Optional[str] = None  # what generates instead of ``pipe(...)``, e.g. ``pipe.tgate``
    call_kwargs: tuple[str, ...] = ()  # that call's extra keyword arguments, ``name=CONSTANT``


class Accelerator(ABC):
    """One method as a plug-in: check its parameters, apply it to a pipeline, undo it.

    ``apply`` and ``remove`` act on the same pipeline object; a composition applies several
    methods in the order of ``accelerators.METHODS`` and removes them in reverse (see
    ``accelerators.applied``).
    """

    name: ClassVar[str]
    label: ClassVar[str]  # the name researchers use, e.g. "T-GATE"
    Params: ClassVar[type]  # a dataclass: the method's parameters, named as in its package
    compiles: ClassVar[bool] = False  # builds graphs on its first calls (a warm-up cost; FLOPs not countable)
    # computes what the pipeline computes with the same multiply-adds, in another layout, kernel or
    # precision: a side's FLOPs are counted without such methods (they would hide them or miscount them)
    same_arithmetic: ClassVar[bool] = False
    # other methods this one cannot compose with, name -> why (``accelerators.build`` refuses the pair)
    excludes: ClassVar[dict[str, str]] = {}
    order: ClassVar[int]  # place in a composition: applied by increasing order, removed in reverse
    constants: ClassVar[dict[str, str]] = {}  # parameter -> its constant in a generated file
    # parameter -> 1 where a larger value is faster by the method's design, -1 where a smaller one is:
    # the search's prior (``accel_bench.sweep.search``), checked there by measuring neighbours
    faster: ClassVar[dict[str, int]] = {}

    def __init__(self, params: Any, target: Target):
        self.params = params
        self.target = target

    @classmethod
    def params_from(cls, values: Mapping[str, Any]) -> Any:
        """The parameters from a config's values; a list parameter as a plain list, as records hold it."""

        def plain(value: Any) -> Any:
            return list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value

        return cls.Params(**{f.name: plain(values[f.name]) for f in dataclasses.fields(cls.Params)})

    @classmethod
    def required(cls) -> list[str]:
        """Parameters that must have a value (those without a default in ``Params``)."""
        return [f.name for f in dataclasses.fields(cls.Params) if f.default is dataclasses.MISSING]

    def record(self) -> dict[str, Any]:
        """The values that ran, as rows record them (unset optional parameters left out)."""
        return {k: v for k, v in dataclasses.asdict(self.params).items() if v is not None}

    @classmethod
    def check(cls, params: Any, target: Target) -> None:
        """Raise ConfigError for a value this method cannot run with on ``target``, beyond the limits on
        ``Params``' fields (``accel_bench.limits``), which ``accelerators.build`` checks first."""

    @abstractmethod
    def apply(self, pipe: Any, active: Mapping[str, "Accelerator"]) -> None:
        """Patch ``pipe``; ``active`` holds the methods applied before this one, by name."""

    @abstractmethod
    def remove(self, pipe: Any) -> None:
        """Undo ``apply`` with the package's own means."""

    def reset(self, pipe: Any, seed: int) -> None:
        """Put per-call state (caches, random generators) into a state fixed by ``seed``."""

    def graph_safe(self, pipe: Any) -> Optional[Callable[[tuple, dict], None]]:
        """Called by torch.compile before it compiles the UNet this method patched: make the method's
        per-call Python traceable, moving what a graph cannot hold (a draw from a ``torch.Generator``)
        into the returned host step, which runs before each UNet call, outside the graph, with the
        call's arguments. None: nothing to run there. Undone by ``remove``."""
        return None

    def warmup_needed(self) -> tuple[int, str]:
        """The warm-up batches this method needs before its calls can be timed, and why."""
        return 0, ""

    def entry_point(self, pipe: Any) -> Optional[Callable[..., Any]]:
        """The callable that generates images instead of ``pipe(...)``, if the method needs one."""
        return None

    @classmethod
    @abstractmethod
    def code(cls, family: str, methods: Sequence[str]) -> Code:
        """This method's lines in a generated file for ``family`` (sd | sdxl), composed with ``methods``."""

    @classmethod
    def no_code(cls, methods: Sequence[str], params: Mapping[str, Any]) -> Optional[str]:
        """Why a generated file cannot reproduce what this method measured in this composition; None if it can."""
        return None
