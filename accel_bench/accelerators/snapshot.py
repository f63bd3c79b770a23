"""A snapshot of a pipeline's patchable state, so that removing accelerators is exact.

The packages patch by assigning instance attributes (``module.forward = ...``), swapping a
module's class (tomesd) and registering hooks. All of that lives in each module's ``__dict__``
and ``__class__``, so a shallow copy of those (with the hook and child dictionaries copied too,
since they are mutated in place) restores the pipeline without copying any weights.
"""

from __future__ import annotations

from typing import Any

import torch

# torch's own registries in a module's __dict__ (hooks, children, parameters, buffers): mutated
# in place by register_forward_hook and friends, so the snapshot keeps copies of them.
_REGISTRIES = frozenset(k for k, v in torch.nn.Module().__dict__.items() if isinstance(v, dict))


class PipelineSnapshot:
    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.pipe_dict = dict(pipe.__dict__)
        self.modules: list[tuple[torch.nn.Module, type, dict[str, Any]]] = []
        seen: set[int] = set()
        for component in pipe.components.values():
            if not isinstance(component, torch.nn.Module):
                continue
            for module in component.modules():
                if id(module) in seen:
                    continue
                seen.add(id(module))
                state = {k: (v.copy() if k in _REGISTRIES else v) for k, v in module.__dict__.items()}
                self.modules.append((module, type(module), state))

    def restore(self) -> None:
        for module, cls, state in self.modules:
            module.__class__ = cls
            module.__dict__.clear()
            module.__dict__.update(state)
        self.pipe.__dict__.clear()
        self.pipe.__dict__.update(self.pipe_dict)
