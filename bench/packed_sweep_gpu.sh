#!/usr/bin/env bash
# Packed sweeps on the lent GPU machine, through the README's local multi-GPU launcher
# (hydra/launcher=local_gpus). One step per device call (each fits its 10 minutes):
#
#   bench/packed_sweep_gpu.sh sd15_k4     # a 12-job SD1.5 DeepCache sweep, 4 jobs per task (~8 min on an H200)
#   bench/packed_sweep_gpu.sh sd15_k6     # the same at the launcher's default jobs_per_task (6)
#   bench/packed_sweep_gpu.sh sd15_k24    # 24 jobs (interval 2-7 x branch 0-3) in one task: a task's start paid once
#   bench/packed_sweep_gpu.sh sd15_k6_noflops  # sd15_k6 with count_flops=false: what the FLOPs count costs a task
#   bench/packed_sweep_gpu.sh gpu_pairs   # the 4-job sweep (interval 3,3,5,5) on every GPU the machine has
#
# Results go to $OUT (the device tool's folder; a local folder elsewhere): the sweep's summary.csv,
# the console log, nvidia-smi -L. Assumes the wheels are installed and PYTHONPATH set (bench/README.md).
set -euo pipefail
step=${1:?usage: $0 sd15_k4|sd15_k6|sd15_k24|sd15_k6_noflops|gpu_pairs}
out=${OUT:-bench/results/packed_sweep_gpu}
mkdir -p "$out"
nvidia-smi -L | tee "$out/${step}_gpus.txt"
common=(pipeline=sd15 pipeline.weights=random accel=deepcache steps=50 batch_size=4 num_prompts=16)
# the random-weight model folder, written untimed: a fresh machine has none
python run.py "${common[@]}" steps=2 num_prompts=1 count_flops=false repeats=1 warmup_batches=0 \
  summary_path=/tmp/warm.csv hydra.run.dir=/tmp/warm >/dev/null 2>&1
case "$step" in
  sd15_k4) grid=(accel.cache_interval=2,3,4,5 accel.cache_branch_id=0,1,2 hydra.launcher.jobs_per_task=4) ;;
  sd15_k6) grid=(accel.cache_interval=2,3,4,5 accel.cache_branch_id=0,1,2) ;;
  sd15_k24) grid=(accel.cache_interval=2,3,4,5,6,7 accel.cache_branch_id=0,1,2,3 hydra.launcher.jobs_per_task=24) ;;
  sd15_k6_noflops) grid=(accel.cache_interval=2,3,4,5 accel.cache_branch_id=0,1,2 count_flops=false) ;;
  gpu_pairs) grid=(accel.cache_interval=3,3,5,5 hydra.launcher.jobs_per_task=1) ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
began=$(date +%s.%N)
set +e
python run.py -m hydra/launcher=local_gpus "${common[@]}" "${grid[@]}" hydra.sweep.dir=/tmp/sweep_$step \
  summary_path=/tmp/all_$step.csv 2>&1 | grep -v "it/s\]\|batch/s\]\|s/batch\]\|s/it\]" | tee "$out/${step}_console.log"
code=${PIPESTATUS[0]}
set -e
ended=$(date +%s.%N)
echo "step $step exit $code wall_s $(python3 -c "print(round($ended - $began, 1))")" | tee -a "$out/${step}_console.log"
cp "/tmp/sweep_$step/summary.csv" "$out/${step}_summary.csv"
tail -n 5 /tmp/sweep_$step/.submitit/*/*_log.out | grep "\[sweep\]" >"$out/${step}_job_lines.txt" || true
