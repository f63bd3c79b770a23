"""``python -m accel_bench.postprocess sweep_dir=... out_dir=...`` (a Hydra app: conf/postprocess.yaml)."""

import sys

import hydra
from omegaconf import DictConfig

from ..config import CONF_DIR
from ..errors import exit_2_on_config_error
from ..overrides import check_overrides
from . import postprocess, register_configs

register_configs()


def counted(number: int, singular: str, plural: str) -> str:
    return f"{number} {singular if number == 1 else plural}"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="postprocess")
def main(cfg: DictConfig) -> None:
    with exit_2_on_config_error():
        report = postprocess(cfg)
    for note in report.notes:
        print(note)
    for e in report.entries:
        if e.fid_images is not None:
            against = f", {e.fid_reference:.2f} against the reference images (baseline {e.base_fid_reference:.2f})"
            print(
                f"quality: {e.pipeline} {e.scheduler} {e.steps} steps, budget {e.quality_budget:g}, {e.accel}: FID "
                f"{e.fid:.2f} and LPIPS {e.quality_lpips:.4f} against the baseline over {e.fid_images} prompts"
                f"{against if e.fid_reference is not None else ''} ({e.fid_weights}; {e.quality_s:.0f} s)"
            )
    for prompt_id, why in report.dropped.items():
        print(f"dropped task {prompt_id}: its ground truth fails it ({why})")
    for prompt_id, what in report.over_budget.items():
        print(
            f"task {prompt_id} kept though its ground truth missed its budget: {what}; a candidate as good may fail it"
        )
    for reason, rows in report.left_out.items():
        speedups = ", ".join(f"{m.speedup:.2f}x" for m in rows[:6]) + (", ..." if len(rows) > 6 else "")
        print(f"left out: {counted(len(rows), 'ok row', 'ok rows')} {reason} ({speedups})")
    print(
        f"{counted(len(report.entries), 'entry', 'entries')}, {counted(report.tasks, 'task', 'tasks')}, "
        f"{counted(report.plots, 'plot', 'plots')} -> {report.out_dir}"
    )
    if report.missing:
        print(
            f"MISSING: {len(report.missing)} grid combination(s) x budget have no qualifying result:", file=sys.stderr
        )
        for gap in report.missing:
            print(
                f"  {gap.pipeline} {gap.scheduler} {gap.steps} steps, budget {gap.quality_budget:g}: {gap.reason}",
                file=sys.stderr,
            )


if __name__ == "__main__":
    with exit_2_on_config_error():
        check_overrides(sys.argv[1:], "postprocess")
    main()
