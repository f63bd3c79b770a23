#!/usr/bin/env bash
# Repeatability across device sessions (issue 7): the same SD1.5 and SDXL DeepCache runs
# (interval 3, branch 0, batch 4, random weights, fp16, DDIM 50 steps), interleaved against the
# baseline with 3 repeats and warm-up until stable. Run once in each of two separate device
# sessions, each into its own CSV, then compare the two medians of `speedup` (target: within 5%):
#   bash bench/repeatability.sh bench/results/repeatability_session1.csv
#   bash bench/repeatability.sh bench/results/repeatability_session2.csv
#   python bench/compare_sessions.py bench/results/repeatability_session1.csv bench/results/repeatability_session2.csv
set -euo pipefail
summary=${1:?usage: bash bench/repeatability.sh SUMMARY_CSV}
for pipeline in sd15 sdxl; do
  python run.py pipeline=$pipeline pipeline.weights=random accel=deepcache accel.cache_interval=3 \
    accel.cache_branch_id=0 steps=50 batch_size=4 num_prompts=16 dtype=fp16 \
    warmup_batches=auto repeats=3 interleave=true summary_path="$summary"
done
