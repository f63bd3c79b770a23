#!/usr/bin/env bash
# GPU proof of the core run, and the runs repeated in separate device sessions:
# DeepCache (interval 3, branch 0) on the real SD1.5 and SDXL architectures with random weights,
# fp16, DDIM 50 steps, batch 4, 16 prompts, at the GPU defaults (warm-up until stable, 3 repeats).
# The host's launch speed is recorded first: SD1.5's DeepCache steps are short enough to depend on it.
#   bash bench/gpu_proof.sh [SUMMARY_CSV]       (then bench/compare_sessions.py on the sessions' rows)
set -euo pipefail
summary=${1:-bench/results/gpu_proof.csv}
python bench/launch_overhead.py --out "${summary%.csv}_launch.json"
for pipeline in sd15 sdxl; do
  python run.py pipeline=$pipeline pipeline.weights=random accel=deepcache accel.cache_interval=3 \
    accel.cache_branch_id=0 steps=50 batch_size=4 num_prompts=16 dtype=fp16 summary_path="$summary"
done
