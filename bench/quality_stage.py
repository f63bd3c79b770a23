"""The quality stage, measured: FID and LPIPS over many prompts for DeepCache's published settings.

    python bench/quality_stage.py sd15 --steps 20 --prompts 256 --batch 16 --out DIR   # GPU, random weights
    python bench/quality_stage.py tiny --steps 10 --prompts 32 --batch 8 --out DIR     # CPU

A sweep of DeepCache at the published settings (branch 0, intervals ``--intervals``) writes its rows
(``run.py -m``, 16 prompts, one repeat); then post-process's quality stage (``postprocess.quality``)
runs on each row: ``--prompts`` prompts (the built-in list crossed with four styles: no captions file
travels to the GPU machine), images generated for baseline and method with the run's seeds, FID and
LPIPS against the baseline's. Writes ``quality_stage_<pipeline>.json`` in ``--out``: per setting its
speedup, the sweep row's 16-prompt LPIPS and PSNR, the stage's FID, LPIPS, image count and seconds
(the first setting's include the baseline's images, which the second reuses), with machine and date.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

STYLES = ("", ", a photograph", ", an oil painting", ", a pencil sketch")


def prompts(count: int) -> list[str]:
    from accel_bench.prompts import BUILTIN_PATH, _read_txt

    builtin = _read_txt(BUILTIN_PATH)
    return [p + style for style in STYLES for p in builtin][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--intervals", default="3,5")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--work", default="/tmp/quality_stage")
    parser.add_argument("--out", default="bench/results/quality_stage")
    args = parser.parse_args()
    chosen = prompts(args.prompts)
    if len(chosen) < args.prompts:
        sys.exit(f"--prompts: at most {len(prompts(10**6))} prompts can be made from the built-in list")
    work = Path(args.work)
    sweep = work / "sweep"
    command = [
        sys.executable,
        str(Path(__file__).resolve().parent.parent / "run.py"),
        "-m",
        f"pipeline={args.pipeline}",
        "pipeline.weights=random",
        f"dtype={args.dtype}",
        f"steps={args.steps}",
        f"batch_size={args.batch}",
        "num_prompts=16",
        "repeats=1",
        "accel=deepcache",
        "accel.cache_branch_id=0",
        f"accel.cache_interval={args.intervals}",
        f"hydra.sweep.dir={sweep}",
        f"summary_path={work / 'summary.csv'}",
    ]
    began = time.perf_counter()
    subprocess.run(command, check=True)
    sweep_s = time.perf_counter() - began

    from accel_bench.environment import device_name
    from accel_bench.postprocess.quality import measure_quality
    from accel_bench.postprocess.records import read_summaries

    measured, _ = read_summaries([sweep])
    rows = []
    for m in sorted(measured, key=lambda m: m.params["cache_interval"]):
        quality = measure_quality([m], work / "out", chosen, "auto", None, args.batch)[m.run_id]
        rows.append(
            {
                "cache_interval": m.params["cache_interval"],
                "cache_branch_id": m.params["cache_branch_id"],
                "speedup": m.speedup,
                "row_psnr_db": m.psnr_db,
                "row_lpips": m.lpips,
                "fid": quality.fid,
                "lpips": quality.lpips,
                "images": quality.images,
                "fid_weights": quality.weights,
                "quality_s": quality.seconds,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "python bench/quality_stage.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "device": device_name(device), "cpu": platform.machine()},
        "model_weights": "random",
        "note": "random weights: the FID and LPIPS networks score noise; the stage's times are real",
        "pipeline": args.pipeline,
        "steps": args.steps,
        "batch_size": args.batch,
        "sweep_s": sweep_s,
        "rows": rows,
    }
    (out / f"quality_stage_{args.pipeline}.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
