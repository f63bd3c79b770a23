"""``python -m accel_bench.evaluate ...`` (a Hydra app: conf/evaluate.yaml)."""

import sys

import hydra
from omegaconf import DictConfig

from ..config import check_overrides
from ..errors import exit_2_on_config_error
from ..results import fmt
from . import check, evaluate_manifest, evaluate_pair, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with exit_2_on_config_error():
        mode = check(cfg)
    if mode == "pair":
        m = evaluate_pair(cfg)
        print(f"candidate: {m['status']}{' (' + m['error'] + ')' if m['error'] else ''}")
        print(f"  latency {fmt(m['latency_s'], '.4f')} s/image vs baseline {fmt(m['base_latency_s'], '.4f')}: "
              f"speedup {fmt(m['speedup'], '.2f')}x, CLIP loss {fmt(m['clip_loss'], '+.2%')}, PSNR {fmt(m['psnr_db'], '.1f')} dB"
              + ("" if m["passed"] is None else f", passed: {m['passed']}"))
        if m["model_weights"] == "random":
            print("  (random weights: speed is real, CLIP loss and PSNR are not quality measures)")
        return
    rows = evaluate_manifest(cfg)
    ok = [r for r in rows if r["status"] == "ok"]
    print(f"{len(rows)} tasks: {len(ok)} measured, {sum(bool(r['passed']) for r in rows)} passed; "
          f"ground truth passed {sum(bool(r['gt_passed']) for r in rows)}; failed: {len(rows) - len(ok)}")
    for r in rows:
        if r["status"] != "ok":
            print(f"  {r['prompt_id']}: {r['error']}")


if __name__ == "__main__":
    with exit_2_on_config_error():
        check_overrides(sys.argv[1:], "evaluate")
    main()
