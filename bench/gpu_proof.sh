#!/usr/bin/env bash
# GPU proof of the core run (issue 2): DeepCache (interval 3, branch 0) on the real SD1.5 and SDXL
# architectures with random weights, fp16, DDIM 50 steps, batch 4, 16 prompts.
#   bash bench/gpu_proof.sh [SUMMARY_CSV]
set -euo pipefail
summary=${1:-bench/results/gpu_proof.csv}
for pipeline in sd15 sdxl; do
  python run.py pipeline=$pipeline pipeline.weights=random accel=deepcache accel.cache_interval=3 \
    accel.cache_branch_id=0 steps=50 batch_size=4 num_prompts=16 dtype=fp16 summary_path="$summary"
done
