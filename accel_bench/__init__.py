"""accel_bench: training-free Stable Diffusion accelerators, measured against their own baselines."""

__version__ = "0.1.0"
