"""SDXL's fp16 VAE upcast with the same fp32 weights at every decode, for a compiled decoder.

SDXL's pipelines cast an fp16 VAE whose config says ``force_upcast`` to fp32 before each decode
(``upcast_vae``) and back after: the fp32 weights are new tensors at every call, where a CUDA graph
captured earlier cannot read them, so inductor would record the decoder's graph again in every call.
While held, the pipeline's ``upcast_vae`` installs fp32 copies made once instead: the pipeline's own
steps, the same arithmetic (fp16 to fp32 is exact, so the copies hold what its casts would make), the
weights where the graphs captured them. The copies are found again by value at each hold: an eager
side's calls in between leave new fp16 tensors of the same values.
"""

from __future__ import annotations

from typing import Any

import torch

# the lines a generated file runs for the same, after loading (``Compile.code``)
CODE = (
    '    if "vae_decoder" in COMPILE_TARGETS and pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast:',
    "        # SDXL casts its fp16 VAE to fp32 at every decode: the same fp32 weights each time, for the graphs",
    "        fp32 = [p.data.float() for p in pipe.vae.parameters()]",
    '        pipe.upcast_vae = lambda: [setattr(p, "data", w) for p, w in zip(pipe.vae.parameters(), fp32)]',
)


def upcasts(pipe: Any, family: str) -> bool:
    """Whether the pipeline casts its VAE around every decode: SDXL's, with an fp16 VAE that says so."""
    return family == "sdxl" and pipe.vae.dtype == torch.float16 and bool(pipe.vae.config.get("force_upcast"))


class HeldUpcast:
    """From ``hold`` to ``release``, the pipeline's upcast installs the same fp32 weights every time."""

    def __init__(self) -> None:
        self.copies: dict[torch.nn.Parameter, tuple[torch.Tensor, torch.Tensor]] = {}  # -> (its fp16, fp32 copy)
        self.originals: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    def hold(self, pipe: Any) -> None:
        self.originals = [(p, p.data) for p in pipe.vae.parameters()]
        for p, data in self.originals:
            kept = self.copies.get(p)
            if kept is None or kept[0].shape != data.shape or not torch.equal(kept[0], data):
                self.copies[p] = (data, data.float())
        fp32 = [(p, self.copies[p][1]) for p, _ in self.originals]

        def upcast_vae() -> None:
            for p, weight in fp32:
                p.data = weight

        pipe.upcast_vae = upcast_vae

    def release(self, pipe: Any) -> None:
        pipe.__dict__.pop("upcast_vae", None)
        for p, data in self.originals:  # the tensors it held before: the pipeline's casts made others
            p.data = data
        self.originals = []
