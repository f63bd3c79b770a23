"""``python -m accel_bench.evaluate ...`` (a Hydra app: conf/evaluate.yaml)."""

import sys

import hydra
from omegaconf import DictConfig

from ..config import CONF_DIR
from ..console import fmt
from ..errors import exit_2_on_config_error
from ..overrides import check_overrides
from .config import check, register_configs
from .evaluator import evaluate_manifest, evaluate_pair
from .file_record import FileRecord
from .sandbox import probe

register_configs()


def _verdict(record: FileRecord) -> str:
    if record.passed is None:
        return "" if record.reason is None else f"; {record.reason}"
    return "; passed" if record.passed else f"; not passed: {record.reason}"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with exit_2_on_config_error():
        mode = check(cfg)
        info = probe(cfg.sandbox, cfg.allow_unsandboxed)
    print(
        f"sandbox: {info.kind}"
        + (
            f" {info.version}, {info.memory_gb:.0f} GB memory, {len(info.gpu_nodes)} GPU device nodes"
            if info.kind == "bwrap"
            else " (allow_unsandboxed=true: candidate code runs unconfined)"
        )
    )
    if mode == "pair":
        pair = evaluate_pair(cfg, info)
        m = pair.record
        print(f"candidate: {m.status}{_verdict(m)}{' (' + m.error + ')' if m.error else ''}")
        if m.latency_s is None:
            print(f"  no measurement of the candidate; baseline {fmt(m.base_latency_s, '.4f')} s/image")
        else:
            print(
                f"  latency {fmt(m.latency_s, '.4f')} s/image vs baseline {fmt(m.base_latency_s, '.4f')}: "
                f"speedup {fmt(m.speedup, '.2f')}x ({fmt(m.speedup_low, '.2f')}-{fmt(m.speedup_high, '.2f')} over "
                f"{m.repeats} passes), CLIP loss {fmt(m.metrics['clip_loss'], '+.2%')}, PSNR {fmt(m.psnr_db, '.1f')} dB "
                f"(lowest {fmt(m.psnr_min_db, '.1f')}), LPIPS {fmt(m.metrics['lpips'], '.4f')}, round trip "
                f"{fmt(m.round_trip_share, '.2%')} of a batch"
            )
        if m.disturbed:
            print(f"  DISTURBED ({m.clean_passes} pass pairs clean on both sides): {m.disturbed}")
        for label, watched in (("candidate", m.watched), ("baseline", pair.baseline.watched)):
            if watched.leftover_gpu_s:
                print(
                    f"  {label}: left {watched.leftover_gpu_s:.3f} s of GPU work queued behind its replies "
                    "(waited out after its passes, charged to it)"
                )
        if pair.weights == "random":
            print("  (random weights: speed is real, CLIP loss, LPIPS and PSNR are not quality measures)")
        return
    rows = evaluate_manifest(cfg, info)
    ok = [r for r in rows if r.status == "ok"]
    print(
        f"{len(rows)} tasks: {len(ok)} measured, {sum(bool(r.passed) for r in rows)} passed; "
        f"ground truth passed {sum(bool(r.gt_passed) for r in rows)}; failed: {len(rows) - len(ok)}"
    )
    for r in rows:
        if not r.passed:
            print(f"  {r.prompt_id}: {r.reason}: {r.error}")


if __name__ == "__main__":
    with exit_2_on_config_error():
        check_overrides(sys.argv[1:], "evaluate")
    main()
