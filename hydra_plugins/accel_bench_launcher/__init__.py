"""Hydra plugin package of accel_bench (Hydra only loads plugins from the hydra_plugins namespace)."""
