"""The fewer-steps bar, measured: trivial step cuts and honest ground truth through the evaluator.

    python bench/fewer_steps.py tiny 6 --batch 2 --prompts 4          # CPU, the tiny pipeline
    python bench/fewer_steps.py sd15 20 --batch 4 --prompts 8 --dtype fp16   # GPU, random weights

One manifest, one task per candidate (target ``--target``), all sharing the reference baseline
(the pipeline's own sampler, DDIM) and evaluated in one real ``python -m accel_bench.evaluate``
session: the honest DeepCache file (interval 3, branch 0, the ground truth post-process writes),
the baseline at half and two thirds of its steps, and DPM-Solver++ at half the steps. Writes
``fewer_steps_<pipeline>.json`` in ``--out``: per candidate its speedup, pooled PSNR, the
reference's steps, speedup and PSNR, the file's speed beside the reference, the required PSNR,
verdict and reason, with machine and date.
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

from omegaconf import OmegaConf

from accel_bench.config import CONF_DIR
from accel_bench.postprocess.codegen import CodeSpec, generate_code


def spec(pipeline: dict, steps: int, scheduler: str = "ddim", methods=(), params=None) -> CodeSpec:
    sampler = OmegaConf.load(CONF_DIR / "scheduler" / f"{scheduler}.yaml")
    return CodeSpec(
        "unused: the evaluator passes the model",
        pipeline["family"],
        sampler.class_name,
        OmegaConf.to_container(sampler.kwargs),
        steps,
        pipeline["resolution"],
        7.5,
        list(methods),
        params or {},
    )


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline")
    parser.add_argument("steps", type=int)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--target", type=float, default=1.3)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", default="bench/results/fewer_steps")
    parser.add_argument("--only", nargs="*", default=None, help="these candidates (SDXL: six processes do not fit)")
    parser.add_argument("extra", nargs="*", help="more evaluator overrides")
    args = parser.parse_intermixed_args()
    pipeline = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "pipeline" / f"{args.pipeline}.yaml"))
    work = Path(f"/tmp/fewer_steps_{args.pipeline}")
    dataset, agent = work / "dataset", work / "agent"
    for folder in (dataset / "gt_code" / "baselines", agent):
        folder.mkdir(parents=True, exist_ok=True)
    n = args.steps
    (dataset / "gt_code" / "baselines" / "base.py").write_text(generate_code(spec(pipeline, n), "baseline"))
    deepcache = spec(pipeline, n, methods=["deepcache"], params={"cache_interval": 3, "cache_branch_id": 0})
    (dataset / "gt_code" / "gt.py").write_text(generate_code(deepcache, "DeepCache"))
    candidates = {
        "deepcache": generate_code(deepcache, "DeepCache, interval 3, branch 0"),
        f"ddim_{n // 2}_steps": generate_code(spec(pipeline, n // 2), "half the steps"),
        f"ddim_{round(2 * n / 3)}_steps": generate_code(spec(pipeline, round(2 * n / 3)), "two thirds of the steps"),
        f"dpmsolver_{n // 2}_steps": generate_code(spec(pipeline, n // 2, "dpmsolver"), "DPM-Solver++, half the steps"),
    }
    if args.only:
        candidates = {name: source for name, source in candidates.items() if name in args.only}
    entries = []
    for number, (name, source) in enumerate(sorted(candidates.items())):
        (agent / f"{name}.py").write_text(source)
        entries.append(
            {
                "prompt_id": str(number),
                "task_key": f"{args.pipeline}_DDIM_{n}",
                "difficulty": "medium",
                "pipeline": args.pipeline,
                "steps": n,
                "resolution": pipeline["resolution"],
                "batch_size": args.batch,
                "path_to_gt_code": "gt_code/gt.py",
                "path_to_reference_baseline": "gt_code/baselines/base.py",
                "path_to_gen_code_baseline": "none.py",
                "path_to_gen_code": f"{name}.py",
                "path_to_metrics": f"{name}_metrics.json",
                "target_speedup": args.target,
                "quality_budget": 0.5,
            }
        )
    (dataset / "manifest.json").write_text(json.dumps(entries))
    command = [
        sys.executable,
        "-m",
        "accel_bench.evaluate",
        f"manifest={dataset / 'manifest.json'}",
        f"code_dir={agent}",
        f"num_prompts={args.prompts}",
        f"dtype={args.dtype}",
        f"models.{args.pipeline}=random",
        *args.extra,
    ]
    began = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - began
    print(result.stdout)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    rows = []
    for name in sorted(candidates):
        m = json.loads((agent / f"{name}_metrics.json").read_text())
        bar = m["bar"] or {}
        rows.append(
            {
                "candidate": name,
                "speedup": m["speedup"],
                "speedup_low": m["speedup_low"],
                "psnr_db": bar.get("psnr_db"),
                "reference_steps": bar.get("reference_steps"),
                "reference_speedup": bar.get("reference_speedup"),
                "file_speedup_beside": bar.get("file_speedup_beside"),
                "reference_psnr_db": bar.get("reference_psnr_db"),
                "required_psnr_db": bar.get("required_psnr_db"),
                "psnr_min_db": m["psnr_min_db"],
                "passed": m["passed"],
                "reason": m["reason"],
                "gt_passed": m["gt"]["passed"],
            }
        )
        print(
            f"{name:22s} {m['speedup'] or 0:5.2f}x (low {m['speedup_low'] or 0:.2f})  PSNR {bar.get('psnr_db') or 0:6.2f} dB"
            f"  reference {bar.get('reference_steps')} steps {bar.get('reference_speedup') or 0:.2f}x "
            f"(the file beside it {bar.get('file_speedup_beside') or 0:.2f}x) "
            f"{bar.get('reference_psnr_db') or 0:6.2f} dB  -> {m['reason'] or 'passed'}"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"fewer_steps_{args.pipeline}.json").write_text(
        json.dumps(
            {
                "command": " ".join(["python", "bench/fewer_steps.py", *sys.argv[1:]]),
                "evaluator": " ".join(command[1:]),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": {"host": platform.node(), "device": _device_name(m["device"]), "cpu": platform.processor()},
                "model_weights": m["model_weights"],
                "evaluation_s": round(elapsed, 1),
                "margin_db": (m["bar"] or {}).get("margin_db"),
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
