"""Compilation inside measured batches: dynamo tracing a frame again (a recompile) or inductor recording a
CUDA graph again. Either costs seconds where a batch costs milliseconds, and the warm-up is where it
belongs: a pass with one is not clean.

Counted by torch's own compile callbacks (``torch._dynamo.callback``: dynamo runs them around each
compilation and inductor around each CUDA graph recording), in this process only; a side measured in
another process (the evaluator's) is judged by its batch times (``outliers``).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

RECORDING = "CUDA graph recording"  # torch's CallbackTrigger.CUDAGRAPH_RECORDING
COMPILATION = "compilation"  # the other triggers: dynamo tracing a frame, a deferred backward

_seen: Counter = Counter()  # every compilation of this process, by kind, counted while registered


def compiled_words(compiled: dict[str, int]) -> str:
    """``{"CUDA graph recording": 2}`` as "2 CUDA graph recording(s)"."""
    return ", ".join(f"{n} {kind}(s)" for kind, n in sorted(compiled.items()))


def _count(args: Any) -> None:
    _seen[RECORDING if args.callback_trigger.name == "CUDAGRAPH_RECORDING" else COMPILATION] += 1


def _register() -> None:
    """At each start: ``torch._dynamo.reset()`` clears every callback. Torch runs a start callback once
    per outermost compilation."""
    from torch._dynamo.callback import callback_handler

    if _count not in callback_handler.start_callbacks:
        callback_handler.register_start_callback(_count)


class CompileWatch:
    """The compilations between ``start`` and ``stop``, by kind."""

    def __init__(self) -> None:
        self.before: Counter = Counter()

    def start(self) -> None:
        _register()
        self.before = Counter(_seen)

    def stop(self) -> dict[str, int]:
        return dict(sorted((_seen - self.before).items()))
