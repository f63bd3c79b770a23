"""How much work the host must issue per UNet call: aten operations per call, counted on the meta device.

Each operation costs the host Python, dispatcher and (for most) a kernel launch, whatever the GPU
does. Multiplied by a session's microseconds per launch (bench/launch_overhead.py) it is a floor
on the host's time per denoising step, to set against the step's measured time: a step that
takes little more than that floor is bound by the host, and its timing follows the host's speed.
No weights and no GPU needed: the meta device only propagates shapes.

    python bench/unet_op_count.py --out bench/results/unet_op_count.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import diffusers
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from accel_bench.pipelines import architecture_config

ARCHITECTURES = ("sd15", "sd21", "sdxl")


class OperationCount(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def operations_per_call(architecture: str, batch: int) -> int:
    """aten operations in one fp16 UNet call on ``batch`` latents at the architecture's native size."""
    config = architecture_config(architecture, "unet")
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel.from_config(config).half()
        size = config["sample_size"]
        latents = torch.zeros(batch, config["in_channels"], size, size, dtype=torch.half)
        text = torch.zeros(batch, 77, config["cross_attention_dim"], dtype=torch.half)
        added = {}
        if config.get("addition_embed_type") == "text_time":
            time_ids = 6  # SDXL: original size, crop corner, target size
            pooled = config["projection_class_embeddings_input_dim"] - time_ids * config["addition_time_embed_dim"]
            added = {"added_cond_kwargs": {"text_embeds": torch.zeros(batch, pooled, dtype=torch.half),
                                           "time_ids": torch.zeros(batch, time_ids, dtype=torch.half)}}
        with torch.no_grad(), OperationCount() as counter:
            unet(latents, torch.tensor(10), text, **added)
    return counter.count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8, help="latents per UNet call (8 = batch 4 with classifier-free guidance)")
    options = parser.parse_args()
    record = {"batch": options.batch, "torch": torch.__version__, "diffusers": diffusers.__version__,
              "operations_per_unet_call": {name: operations_per_call(name, options.batch) for name in ARCHITECTURES}}
    options.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
