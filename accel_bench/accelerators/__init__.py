"""Acceleration methods as plug-ins, their compositions, and exact restoration of the baseline pipeline.

Adding a method means adding one module to this package, with an ``Accelerator`` subclass (its
parameters, checks, application, removal and generated code), and one file under ``conf/accel/``:
``METHODS`` finds it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import typing
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from ..errors import ConfigError
from ..limits import Limit, check_limits, limit_of
from .base import Accelerator, Code, Target
from .compile import CUDA_GRAPH_MODES, Compile, CompileParams
from .snapshot import PipelineSnapshot
from .whole_step import STEP


def _discover() -> dict[str, type[Accelerator]]:
    """Every method of this package's modules, by name, in application order (``Accelerator.order``)."""
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")
    found, stack = [], list(Accelerator.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if not inspect.isabstract(cls) and cls.__module__.startswith(f"{__name__}."):
            found.append(cls)
    return {cls.name: cls for cls in sorted(found, key=lambda cls: (cls.order, cls.name))}


# Application order of a composition; removal runs in reverse.
METHODS: dict[str, type[Accelerator]] = _discover()


def param_fields() -> dict[str, tuple[Any, Optional[Limit]]]:
    """Every method's parameters, name -> (type, limit): the union forms the ``accel`` config schema."""
    fields: dict[str, tuple[Any, Optional[Limit]]] = {}
    for cls in METHODS.values():
        for f in dataclasses.fields(cls.Params):
            typed = (typing.get_type_hints(cls.Params)[f.name], limit_of(cls.Params, f.name))
            if fields.setdefault(f.name, typed) != typed:  # one key of the accel config, one meaning
                raise TypeError(f"accel.{f.name}: {cls.__name__} gives it another type or limit than a method before")
    return fields


def speed_directions() -> dict[str, int]:
    """``accel.<parameter>`` -> 1 or -1: the direction in which each method's parameter is faster by design."""
    return {f"accel.{key}": sign for cls in METHODS.values() for key, sign in cls.faster.items()}


def build(accel: Mapping[str, Any], target: Target) -> list[Accelerator]:
    """Check the ``accel`` config against ``target`` and return its methods in application order."""
    methods = list(accel["methods"])
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or len(set(methods)) != len(methods):
        raise ConfigError("accel.methods", methods, f"distinct names among {', '.join(METHODS)}")
    owners = {f.name: cls.name for cls in METHODS.values() for f in dataclasses.fields(cls.Params)}
    for key, owner in sorted(owners.items()):
        if owner not in methods and accel.get(key) is not None:
            used = sorted(k for k, o in owners.items() if o in methods) or ["none"]
            raise ConfigError(
                f"accel.{key}",
                accel[key],
                f"not a parameter of accel={accel['name']} (its parameters: {', '.join(used)})",
            )
        if owner in methods and accel.get(key) is None and key in METHODS[owner].required():
            raise ConfigError(f"accel.{key}", None, f"a value: accel={accel['name']} uses {METHODS[owner].label}")
    for name in methods:
        for other, why in sorted(METHODS[name].excludes.items()):
            if other in methods:
                raise ConfigError(
                    "accel.methods", methods, f"{METHODS[name].label} without {METHODS[other].label}: {why}"
                )
    accelerators = []
    for name in (m for m in METHODS if m in methods):
        cls = METHODS[name]
        params = cls.params_from(accel)
        check_limits(params, cls.Params, "accel.")
        cls.check(params, target)
        accelerators.append(cls(params, target))
    return accelerators


def baseline_methods(
    baseline: Mapping[str, Any], target: Target, recipe: Optional[Mapping[str, Any]] = None
) -> list[Accelerator]:
    """The baseline's methods: none (eager), torch.compile on the whole UNet (``baseline.compile``), or
    a recipe's methods (``recipe``: the accel config ``baseline.recipe`` names), with ``baseline.compile``
    setting its compile mode when given; ``baseline.whole_step`` compiles the whole denoising step where
    the UNet would be."""
    mode, whole_step = baseline["compile"], bool(baseline.get("whole_step", False))
    if recipe is not None:
        if mode != "none" and "compile" not in recipe["methods"]:
            raise ConfigError(
                "baseline.compile",
                mode,
                f"none with baseline.recipe={baseline['recipe']} (the recipe compiles nothing)",
            )
        values = {**recipe, "mode": recipe["mode"] if mode == "none" else mode}
        if whole_step:
            if "compile" not in recipe["methods"] or "unet" not in recipe["compile_targets"]:
                raise ConfigError(
                    "baseline.whole_step",
                    True,
                    f"false with baseline.recipe={baseline['recipe']} (the recipe does not compile the UNet)",
                )
            values["compile_targets"] = [STEP if name == "unet" else name for name in recipe["compile_targets"]]
        try:
            return build(values, target)
        except ConfigError as error:  # named by the key that chose the recipe
            raise ConfigError("baseline.recipe", baseline["recipe"], f"a recipe that runs here ({error})") from None
    if mode == "none":
        if whole_step:
            raise ConfigError(
                "baseline.whole_step",
                True,
                "false with baseline.compile=none (torch.compile captures the step: set a mode)",
            )
        return []
    params = CompileParams(mode=mode, fullgraph=True, compile_targets=[STEP if whole_step else "unet"])
    try:
        Compile.check(params, target)
    except ConfigError as error:  # the same rules, named by the key that set the mode
        raise ConfigError("baseline.compile", mode, f"none | {error.allowed}") from None
    return [Compile(params, target)]


def baseline_name(baseline: Mapping[str, Any]) -> str:
    """How a row names its baseline: ``eager``, ``compile:<mode>``, ``<recipe>`` or ``<recipe>:compile:<mode>``,
    with ``:step`` after it where the whole denoising step is compiled."""
    compiled = None if baseline["compile"] == "none" else f"compile:{baseline['compile']}"
    if baseline["recipe"] == "none":
        name = compiled or "eager"
    else:
        name = f"{baseline['recipe']}:{compiled}" if compiled else baseline["recipe"]
    return f"{name}:{STEP}" if baseline.get("whole_step", False) else name


def no_code(methods: Sequence[str], params: Mapping[str, Any]) -> Optional[str]:
    """Why generated code cannot reproduce this composition (a method says so), or None."""
    return next((reason for reason in (METHODS[m].no_code(methods, params) for m in methods) if reason), None)


def compiles(accelerators: Sequence[Accelerator]) -> bool:
    """Whether a side compiles graphs on its first calls."""
    return any(acc.compiles for acc in accelerators)


def params_record(accelerators: Sequence[Accelerator]) -> dict[str, Any]:
    """The parameters that ran, flat and sorted by name, as rows and JSON record them."""
    values: dict[str, Any] = {}
    for acc in accelerators:
        values.update(acc.record())
    return dict(sorted(values.items()))


@dataclass
class AppliedPipeline:
    """A pipeline with its accelerators on: ``call`` generates, ``reset`` fixes per-call state."""

    pipe: Any
    accelerators: list[Accelerator]
    call: Callable[..., Any]

    def reset(self, seed: int) -> None:
        for acc in self.accelerators:
            acc.reset(self.pipe, seed)


@contextmanager
def applied(pipe: Any, accelerators: Sequence[Accelerator]) -> Iterator[AppliedPipeline]:
    """Apply ``accelerators`` to ``pipe``; on leaving, the exact baseline pipeline is back.

    Each method first undoes itself with its package's own means; then the snapshot taken
    before puts back whatever a package leaves behind (tgate's patched ``Attention.forward``
    and caches, DeepCache's and tomesd's leftover attributes).
    """
    snapshot = PipelineSnapshot(pipe)
    active: dict[str, Accelerator] = {}
    try:
        for acc in accelerators:
            acc.apply(pipe, active)
            active[acc.name] = acc
        entry_points = [e for e in (acc.entry_point(pipe) for acc in accelerators) if e is not None]
        yield AppliedPipeline(
            pipe=pipe, accelerators=list(accelerators), call=entry_points[-1] if entry_points else pipe
        )
    finally:
        for acc in reversed(list(active.values())):
            acc.remove(pipe)
        snapshot.restore()


__all__ = [
    "Accelerator",
    "AppliedPipeline",
    "CUDA_GRAPH_MODES",
    "Code",
    "METHODS",
    "Target",
    "applied",
    "baseline_methods",
    "baseline_name",
    "build",
    "compiles",
    "no_code",
    "param_fields",
    "params_record",
]
