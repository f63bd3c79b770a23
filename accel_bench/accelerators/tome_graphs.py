"""ToMe on a compiled UNet: tomesd's token merging with its random draws taken on the host.

tomesd decides per call, in Python, which token of every ``sx x sy`` window is a destination: a
``torch.randint`` from a ``torch.Generator`` inside each transformer block, and a forward pre-hook
that writes the latent's size into a dict holding hook handles. Dynamo can trace neither (a
generator is not a tensor; a handle has no graph representation), so a UNet compiled under tomesd
fails or recompiles. Here both move out of the graph: before each UNet call, ``host_step`` takes the
same draws from the same generator, in the blocks' calling order, into one tensor per block that
the graph reads; the blocks run tomesd's own forward with its ``compute_merge`` replaced by one that
reads that tensor. The merge itself is tomesd's ``bipartite_soft_matching_random2d`` (0.1.3)
re-stated with the draw as an argument, so the compiled images equal eager tomesd's.
"""

from __future__ import annotations

import math
from types import FunctionType, MethodType
from typing import Any, Callable, Optional

import torch

from .base import with_global


class BlockDraw:
    """One transformer block's merge for the current call, decided on the host: ``plan`` is
    ``(w, h, r, use_rand)`` in tomesd's terms, or None where the block merges nothing."""

    def __init__(self, args: dict[str, Any]):
        # copied from tomesd's args, which also hold its generator: the graph reads no generator
        self.sx, self.sy = args["sx"], args["sy"]
        self.merge_attn, self.merge_crossattn, self.merge_mlp = (
            args["merge_attn"],
            args["merge_crossattn"],
            args["merge_mlp"],
        )
        self.tokens = 0
        self.plan: Optional[tuple[int, int, int, bool]] = None
        self.rand_idx: Optional[torch.Tensor] = None  # (h // sy, w // sx, 1), refilled in place each call


def _do_nothing(x: torch.Tensor, mode: Optional[str] = None) -> torch.Tensor:
    return x


def bipartite_soft_matching(
    metric: torch.Tensor, w: int, h: int, sx: int, sy: int, r: int, rand_idx: Optional[torch.Tensor]
) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """tomesd's ``bipartite_soft_matching_random2d`` with the destination draw given (None: the
    top-left token of each window, tomesd's ``no_rand``)."""
    B, N, _ = metric.shape
    if r <= 0:
        return _do_nothing, _do_nothing
    with torch.no_grad():
        hsy, wsx = h // sy, w // sx
        if rand_idx is None:
            rand_idx = torch.zeros(hsy, wsx, 1, device=metric.device, dtype=torch.int64)
        idx_buffer_view = torch.zeros(hsy, wsx, sy * sx, device=metric.device, dtype=torch.int64)
        idx_buffer_view.scatter_(dim=2, index=rand_idx, src=-torch.ones_like(rand_idx, dtype=rand_idx.dtype))
        idx_buffer_view = idx_buffer_view.view(hsy, wsx, sy, sx).transpose(1, 2).reshape(hsy * sy, wsx * sx)
        if (hsy * sy) < h or (wsx * sx) < w:
            idx_buffer = torch.zeros(h, w, device=metric.device, dtype=torch.int64)
            idx_buffer[: (hsy * sy), : (wsx * sx)] = idx_buffer_view
        else:
            idx_buffer = idx_buffer_view
        order = idx_buffer.reshape(1, -1, 1).argsort(dim=1)  # destinations (-1) first, then sources
        num_dst = hsy * wsx
        a_idx = order[:, num_dst:, :]
        b_idx = order[:, :num_dst, :]

        def split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            C = x.shape[-1]
            src = torch.gather(x, dim=1, index=a_idx.expand(B, N - num_dst, C))
            dst = torch.gather(x, dim=1, index=b_idx.expand(B, num_dst, C))
            return src, dst

        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = split(metric)
        scores = a @ b.transpose(-1, -2)
        r = min(a.shape[1], r)
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
        unm_idx = edge_idx[..., r:, :]
        src_idx = edge_idx[..., :r, :]
        dst_idx = torch.gather(node_idx[..., None], dim=-2, index=src_idx)

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        src, dst = split(x)
        n, t1, c = src.shape
        unm = torch.gather(src, dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = torch.gather(src, dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)
        return torch.cat([unm, dst], dim=1)

    def unmerge(x: torch.Tensor) -> torch.Tensor:
        unm_len = unm_idx.shape[1]
        unm, dst = x[..., :unm_len, :], x[..., unm_len:, :]
        _, _, c = unm.shape
        src = torch.gather(dst, dim=-2, index=dst_idx.expand(B, r, c))
        out = torch.zeros(B, N, c, device=x.device, dtype=x.dtype)
        out.scatter_(dim=-2, index=b_idx.expand(B, num_dst, c), src=dst)
        a_all = a_idx.expand(B, a_idx.shape[1], 1)
        out.scatter_(dim=-2, index=torch.gather(a_all, dim=1, index=unm_idx).expand(B, unm_len, c), src=unm)
        out.scatter_(dim=-2, index=torch.gather(a_all, dim=1, index=src_idx).expand(B, r, c), src=src)
        return out

    return merge, unmerge


def compute_merge(x: torch.Tensor, draw: BlockDraw) -> tuple[Callable[..., torch.Tensor], ...]:
    """tomesd's ``compute_merge``, with what it decides per call read from the host's ``draw``."""
    if x.shape[1] != draw.tokens:
        raise RuntimeError(f"ToMe on a compiled UNet: a block got {x.shape[1]} tokens, the host planned {draw.tokens}")
    if draw.plan is None:
        m, u = _do_nothing, _do_nothing
    else:
        w, h, r, use_rand = draw.plan
        m, u = bipartite_soft_matching(x, w, h, draw.sx, draw.sy, r, draw.rand_idx if use_rand else None)
    m_a, u_a = (m, u) if draw.merge_attn else (_do_nothing, _do_nothing)
    m_c, u_c = (m, u) if draw.merge_crossattn else (_do_nothing, _do_nothing)
    m_m, u_m = (m, u) if draw.merge_mlp else (_do_nothing, _do_nothing)
    return m_a, m_c, m_m, u_a, u_c, u_m


# per block class: the ToMe class tomesd made first, and its forward calling this module's
# compute_merge. tomesd makes a new class at every apply_patch, and dynamo guards on a block's class:
# a measured pass re-applies the methods, which would retrace the UNet at every pass.
_STABLE: dict[type, tuple[type, FunctionType]] = {}


def _stable(tome_class: type) -> tuple[type, FunctionType]:
    parent = tome_class._parent
    if parent not in _STABLE:
        _STABLE[parent] = (tome_class, with_global(tome_class.forward, "compute_merge", compute_merge))
    return _STABLE[parent]


def _tome_blocks(module: Optional[torch.nn.Module]) -> list[torch.nn.Module]:
    if module is None:
        return []
    return [m for m in module.modules() if type(m).__name__ == "ToMeBlock"]


# where DeepCache may skip a block: (blocktype, block_i, layer_i) as its helper's ``is_skip_step`` takes them
Place = tuple[str, int, int]


def _attention_blocks(block: Any, places: Callable[[int], list[Place]]) -> list[tuple[torch.nn.Module, list[Place]]]:
    return [
        (tome_block, places(layer_i))
        for layer_i, attention in enumerate(getattr(block, "attentions", None) or [])
        for tome_block in _tome_blocks(attention)
    ]


def _calling_order(unet: Any, h: int, w: int) -> list[tuple[torch.nn.Module, int, int, list[Place]]]:
    """Every ToMe block with the latent size it runs at, in the order a UNet call reaches them:
    the down blocks (each halving the size after its blocks, as a stride-2 convolution does:
    rounding up), the middle block, then the up blocks at their skip connections' sizes; and the
    places where DeepCache's helper decides whether it runs (its block, then its attention layer,
    numbered as DeepCache wraps them: up blocks and their layers counted from the output)."""
    order, sizes, size = [], [], (h, w)
    for block_i, down in enumerate(unet.down_blocks):
        blocks = _attention_blocks(down, lambda layer_i: [("down", block_i, 0), ("down", block_i, layer_i)])
        order += [(block, *size, places) for block, places in blocks]
        sizes.append(size)
        if getattr(down, "downsamplers", None):
            size = (math.ceil(size[0] / 2), math.ceil(size[1] / 2))
    order += [(block, *size, [("mid", 0, 0)]) for block in _tome_blocks(unet.mid_block)]
    count = len(unet.up_blocks)
    for up_i, (up, size) in enumerate(zip(unet.up_blocks, reversed(sizes))):
        block_i, layers = count - up_i - 1, len(getattr(up, "resnets", None) or [])
        blocks = _attention_blocks(up, lambda layer_i: [("up", block_i, 0), ("up", block_i, layers - layer_i - 1)])
        order += [(block, *size, places) for block, places in blocks]
    return order


class GraphSafeToMe:
    """Installed over tomesd's patch on a UNet about to be compiled; ``remove`` puts tomesd's back.
    ``deepcache``: DeepCache's helper, where DeepCache runs under the same graphs: a block it skips in
    this call draws nothing, as eager tomesd's does not (its ``is_skip_step`` answers for the phase
    about to run, ``cached_steps``)."""

    def __init__(self, unet: Any, deepcache: Any = None):
        self.unet, self.info, self.deepcache = unet, unet._tome_info, deepcache
        self.args = self.info["args"]
        for handle in self.info["hooks"]:  # the size hook: host_step does its work
            handle.remove()
        self.blocks = _tome_blocks(unet)
        for block in self.blocks:
            cls, forward = _stable(type(block))
            block.__class__ = cls  # tomesd's remove_patch puts the parent class back, as for its own
            block.forward = MethodType(forward, block)
            block._tome_info = BlockDraw(self.args)  # what tomesd's forward hands to compute_merge
        self.orders: dict[tuple[int, int], list[tuple[torch.nn.Module, int, int, list[Place]]]] = {}

    def host_step(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """What tomesd's hook and ``compute_merge`` decide per UNet call: from the latent's size, each
        block's merge, and its destinations drawn from tomesd's generator in calling order."""
        sample = args[0] if args else kwargs["sample"]
        batch, (original_h, original_w) = sample.shape[0], sample.shape[-2:]
        key = (original_h, original_w)
        if key not in self.orders:
            self.orders[key] = _calling_order(self.unet, original_h, original_w)
        sx, sy = self.args["sx"], self.args["sy"]
        for block, h_at, w_at, places in self.orders[key]:
            if self.deepcache is not None and any(
                self.deepcache.is_skip_step(i, layer, kind) for kind, i, layer in places
            ):
                continue  # DeepCache returns this block's cached features: it does not run, nor draw
            draw = block._tome_info
            draw.tokens = h_at * w_at
            downsample = int(math.ceil(math.sqrt(original_h * original_w // draw.tokens)))
            if downsample > self.args["max_downsample"]:
                draw.plan = None
                continue
            w, h = int(math.ceil(original_w / downsample)), int(math.ceil(original_h / downsample))
            r = int(draw.tokens * self.args["ratio"])
            # tomesd turns the random windows off for an odd batch (conditional and unconditional halves apart)
            use_rand = False if batch % 2 == 1 else self.args["use_rand"]
            draw.plan = (w, h, r, use_rand)
            if r <= 0 or not use_rand:
                continue  # tomesd draws nothing here
            generator = self._generator(sample.device)
            drawn = torch.randint(sy * sx, size=(h // sy, w // sx, 1), device=generator.device, generator=generator)
            if draw.rand_idx is None or draw.rand_idx.shape != drawn.shape or draw.rand_idx.device != sample.device:
                draw.rand_idx = torch.empty(drawn.shape, dtype=torch.int64, device=sample.device)
            draw.rand_idx.copy_(drawn)  # in place: the same tensor for every call, as a captured graph reads it

    def _generator(self, device: torch.device) -> torch.Generator:
        from tomesd.utils import init_generator

        generator = self.args["generator"]
        if generator is None:
            generator = self.args["generator"] = init_generator(device)
        elif generator.device != device:
            generator = self.args["generator"] = init_generator(device, fallback=generator)
        return generator

    def remove(self) -> None:
        for block in self.blocks:
            block.__dict__.pop("forward", None)
            block._tome_info = self.info
