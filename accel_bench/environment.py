"""Facts about the machine and the process a measurement ran in, and the seeding every side shares.

Light on purpose: the evaluator's sandboxed candidate process imports it for ``seed_everything``
and must not pull in the run path (config, accelerators, metrics, records).
"""

from __future__ import annotations

import os
import platform
import random
import re
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from . import __version__

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
_PACKAGES = ("torch", "diffusers", "transformers", "open_clip_torch", "DeepCache", "tomesd", "tgate")


def versions() -> dict[str, str]:
    found = {"accel_bench": __version__, "python": platform.python_version(), "cuda": torch.version.cuda or "none"}
    for package in _PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


# torch.compile's own environment settings (inductor and dynamo read them when they are imported), but
# where its cache lives: inductor sets that one itself, for its compile workers
_COMPILE_PREFIXES = ("TORCHINDUCTOR_", "TORCHDYNAMO_", "TORCH_COMPILE_")
_COMPILE_WHERE = ("TORCHINDUCTOR_CACHE_DIR",)


def compile_settings() -> dict[str, str]:
    """torch.compile's settings this process's environment changed (``TORCHINDUCTOR_MAX_AUTOTUNE_CONV_BACKENDS=ATEN``
    leaves convolutions to cuDNN under max-autotune): a graph compiled under them is a different build."""
    return {
        key: value
        for key, value in sorted(os.environ.items())
        if key.startswith(_COMPILE_PREFIXES) and key not in _COMPILE_WHERE
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def physical_device(device: torch.device) -> str:
    """The device as the machine numbers it: a sweep task that sees only GPU 1 (``CUDA_VISIBLE_DEVICES=1``)
    calls it ``cuda``, its row says ``cuda:1``, and its baseline is not shared with GPU 0's."""
    if device.type != "cuda":
        return str(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return f"cuda:{visible[index] if index < len(visible) else index}"


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto``: fp16 on a GPU, fp32 on a CPU."""
    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return DTYPES[dtype]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def process_age_s() -> float:
    """Seconds since this process started (Linux's /proc), else 0."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


# Dense (no sparsity) peaks in TFLOP/s from NVIDIA's datasheets: tensor cores for fp16 and bf16, the
# plain rate for fp32. Matched as whole words against the name torch reports, most specific first.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H200 NVL", {"fp16": 835.5, "bf16": 835.5, "fp32": 60.0}),
    ("H200", {"fp16": 989.4, "bf16": 989.4, "fp32": 66.9}),
    ("H100 PCIe", {"fp16": 756.0, "bf16": 756.0, "fp32": 51.2}),
    ("H100 NVL", {"fp16": 835.5, "bf16": 835.5, "fp32": 60.0}),
    ("H100", {"fp16": 989.4, "bf16": 989.4, "fp32": 66.9}),
    ("A100", {"fp16": 312.0, "bf16": 312.0, "fp32": 19.5}),
    ("L40S", {"fp16": 362.1, "bf16": 362.1, "fp32": 91.6}),
    ("L40", {"fp16": 181.0, "bf16": 181.0, "fp32": 90.5}),
    ("L4", {"fp16": 121.0, "bf16": 121.0, "fp32": 30.3}),
    ("V100", {"fp16": 125.0, "fp32": 15.7}),
    ("T4", {"fp16": 65.0, "fp32": 8.1}),
)


def peak_tflops(device_name: str, dtype: str) -> float | None:
    """The device's dense peak at ``dtype`` (``PEAK_TFLOPS``); None for a CPU or a GPU not listed."""
    for name, peaks in PEAK_TFLOPS:
        if re.search(rf"(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", device_name):  # L4 is not L40
            return peaks.get(dtype)
    return None
