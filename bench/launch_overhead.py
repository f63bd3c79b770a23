"""How fast this machine's host launches GPU work: microseconds per tiny CUDA kernel launch.

SD1.5 at batch 4 on an H100 runs at about half the FLOP rate of SDXL, and DeepCache's shallow
steps are a few milliseconds of GPU work each, so their time depends on the host CPU as much as on
the GPU. Recorded next to each session's runs, this tells a slower host from a noisier GPU.

    python bench/launch_overhead.py --out $OUT/launch.json   # one run of bench/results/gpu_proof/launch.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from accel_bench.environment import device_name


def launches_us(count: int) -> float:
    """Mean microseconds per launch of ``count`` one-element adds, synchronized once at the end."""
    x = torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(count):
        x.add_(1.0)
    torch.cuda.synchronize()
    return (time.perf_counter() - began) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--launches", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("launch_overhead.py measures CUDA launches: no GPU here")
    launches_us(1000)  # first launches load kernels
    rounds = [launches_us(options.launches) for _ in range(options.rounds)]
    report = {
        "gpu": device_name(torch.device("cuda")),
        "host_cpu": device_name(torch.device("cpu")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "launch_us_median": statistics.median(rounds),
        "launch_us_rounds": rounds,
    }
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
