"""accel_bench: measure an accelerated Stable Diffusion pipeline against its own baseline.

    python run.py pipeline=sdxl accel=deepcache
    python run.py -m accel=deepcache accel.cache_interval=2,3,4
"""

import sys

import hydra
from omegaconf import DictConfig

from accel_bench import experiment
from accel_bench.config import check_overrides, register_configs
from accel_bench.errors import exit_2_on_config_error

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> str:
    return experiment.main(cfg)


if __name__ == "__main__":
    with exit_2_on_config_error():
        check_overrides(sys.argv[1:], "config")
    main()
