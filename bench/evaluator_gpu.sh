#!/usr/bin/env bash
# The evaluator on the lent GPU, one step per device call:
#
#   bench/evaluator_gpu.sh sd15   # run.py's SD1.5 DeepCache row -> post-process -> its manifest evaluated three times
#   bench/evaluator_gpu.sh sdxl   # SDXL: the reference baseline against its DeepCache ground truth, pair mode
#
# sd15 knobs (environment): PROMPTS (8) per pass for run.py and the evaluator; TASKS=all (both
# templates' tasks) or speedup (the speedup template's three); EVALS, the evaluations to run ("1 2 3";
# a later call can run "3" alone: the dataset stays in /tmp while the machine is held).
#
# Both: real architectures with random weights, fp16, DDIM 50 steps, batch 4. The report
# (bench/evaluator_gpu_report.py) gives the round trip's share of a batch, the ground truth's speedup
# by the evaluator against run.py's, and each task's verdict in every evaluation. Results go to $OUT
# (the device tool's folder; a local folder elsewhere). Assumes the wheels are installed and
# PYTHONPATH set (bench/README.md).
set -euo pipefail
step=${1:?usage: $0 sd15|sdxl}
out=${OUT:-bench/results/evaluator_gpu}
mkdir -p "$out"
nvidia-smi -L | tee "$out/${step}_gpus.txt"

# bubblewrap: an image without it gets the carried Debian build (.whl/bwrap, with its three libraries)
if ! command -v bwrap >/dev/null && [ -x .whl/bwrap/bwrap ]; then
  mkdir -p /tmp/bwbin
  printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$PWD/.whl/bwrap" "$PWD/.whl/bwrap/bwrap" >/tmp/bwbin/bwrap
  chmod +x /tmp/bwbin/bwrap
  export PATH=/tmp/bwbin:$PATH
fi
sandbox=()
if ! python -c "from accel_bench.evaluate.sandbox import SandboxConfig, probe; print(probe(SandboxConfig(), False))" \
     >"$out/${step}_sandbox.txt" 2>&1; then
  sandbox=(allow_unsandboxed=true)   # recorded in every metrics file as sandbox.kind=none
fi
cat "$out/${step}_sandbox.txt"
quiet() { grep -v "it/s\]\|batch/s\]\|s/batch\]\|s/it\]"; }

case "$step" in
  sd15)
    prompts=${PROMPTS:-8}
    common=(pipeline=sd15 pipeline.weights=random steps=50 batch_size=4 num_prompts=$prompts dtype=fp16)
    evals=${EVALS:-1 2 3}
    if [ "${evals%% *}" = 1 ]; then
    rm -rf /tmp/ev_sweep /tmp/ev_data /tmp/ev_agent /tmp/ev_eval_*
    python run.py "${common[@]}" accel=deepcache accel.cache_interval=3 accel.cache_branch_id=0 repeats=3 interleave=true \
      count_flops=false hydra.run.dir=/tmp/ev_sweep/run summary_path=/tmp/ev_sweep/summary.csv 2>&1 | quiet | tee "$out/sd15_run.log"
    python -m accel_bench.postprocess sweep_dir=/tmp/ev_sweep out_dir=/tmp/ev_data include_random=true "budgets=[0.05]" \
      "grid.pipelines=[sd15]" "grid.schedulers=[ddim]" "grid.steps=[50]" 2>&1 | quiet | tail -n 5
    mkdir -p /tmp/ev_agent
    TASKS=${TASKS:-all} python - <<'EOF'
import json, os, shutil
entries = json.load(open("/tmp/ev_data/manifest.json"))
if os.environ["TASKS"] == "speedup":
    entries = [e for e in entries if e["category"] == "speedup"]
json.dump(entries, open("/tmp/ev_data/manifest_evaluated.json", "w"), indent=2)
for e in entries:  # the candidates are the ground truth itself
    shutil.copy(f"/tmp/ev_data/{e['path_to_gt_code']}", f"/tmp/ev_agent/{e['path_to_gen_code']}")
EOF
    fi
    for i in $evals; do
      python -m accel_bench.evaluate manifest=/tmp/ev_data/manifest_evaluated.json code_dir=/tmp/ev_agent out_dir=/tmp/ev_eval_$i \
        models.sd15=random num_prompts=$prompts dtype=fp16 "${sandbox[@]}" 2>&1 | quiet | tee "$out/sd15_evaluate_$i.log"
    done
    cp /tmp/ev_sweep/summary.csv "$out/sd15_run_summary.csv"
    python bench/evaluator_gpu_report.py sd15 --run /tmp/ev_sweep/summary.csv --evaluations /tmp/ev_eval_* --out "$out/sd15_report.json"
    ;;
  sdxl)
    rm -rf /tmp/ev_xl && mkdir -p /tmp/ev_xl
    python - <<'EOF'
from accel_bench.postprocess.codegen import CodeSpec, generate_code
spec = dict(model_id="stabilityai/stable-diffusion-xl-base-1.0", family="sdxl", scheduler_class="DDIMScheduler", scheduler_kwargs={},
            steps=50, resolution=1024, guidance_scale=5.0)
open("/tmp/ev_xl/baseline.py", "w").write(generate_code(CodeSpec(**spec, methods=[], params={}), "SDXL reference baseline"))
open("/tmp/ev_xl/deepcache.py", "w").write(generate_code(
    CodeSpec(**spec, methods=["deepcache"], params={"cache_interval": 3, "cache_branch_id": 0}), "SDXL DeepCache ground truth"))
EOF
    python -m accel_bench.evaluate baseline=/tmp/ev_xl/baseline.py candidate=/tmp/ev_xl/deepcache.py pipeline=sdxl models.sdxl=random \
      num_prompts=8 batch_size=4 dtype=fp16 warmup_batches=2 repeats=2 max_repeats=2 target_speedup=1.5 out_dir=/tmp/ev_xl/eval "${sandbox[@]}" \
      2>&1 | quiet | tee "$out/sdxl_evaluate.log"
    python bench/evaluator_gpu_report.py sdxl --evaluations /tmp/ev_xl/eval --out "$out/sdxl_report.json"
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
