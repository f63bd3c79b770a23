"""The run's command line: ``accel-bench ARGS`` (installed) or ``python run.py ARGS`` (a checkout).

accel-bench pipeline=sdxl accel=deepcache
accel-bench -m accel=deepcache accel.cache_interval=2,3,4
"""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config import CONF_DIR, register_configs
from .errors import exit_2_on_config_error
from .overrides import check_overrides


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> str:
    """Hydra's task: one run (its table, exit 1 or 2 unless ok), or one job of a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from .sweep.jobs import sweep_job

        return sweep_job(cfg, hydra_cfg)
    from .console import format_summary
    from .experiment import run

    row = run(cfg, Path(hydra_cfg.runtime.output_dir))
    print(format_summary(row, cfg.summary_path), flush=True)
    if row.status != "ok":
        sys.exit(2 if row.status == "invalid" else 1)
    return row.status


def main() -> None:
    """Every override checked before Hydra starts (one line, exit 2), then the Hydra app."""
    register_configs()
    with exit_2_on_config_error():
        check_overrides(sys.argv[1:], "config")
    _hydra_main()
