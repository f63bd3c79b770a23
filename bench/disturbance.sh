#!/usr/bin/env bash
# Numbers that know when they were disturbed, one scenario step per call:
#
#   bench/disturbance.sh cpu        # a tiny sweep on a quiet machine, then beside CPU-bound processes; post-process on both
#   bench/disturbance.sh cpu_evaluator  # identical code in the evaluator, quiet and beside CPU-bound processes
#   bench/disturbance.sh compiled   # GPU: deepcache_compile (reduce-overhead, fullgraph) interleaved against the
#                                   #      CUDA-graph baseline and against the eager one
#   bench/disturbance.sh other      # GPU: an eager DeepCache run while another process runs large products on the GPU
#   bench/disturbance.sh evaluator  # GPU: the plain pipeline, and the plain pipeline leaving GPU work queued, against it
#
# GPU steps: SD1.5 architecture with random weights, fp16, batch 4 (PIPELINE=tiny runs them on a CPU
# machine as a dry run). Results go to $OUT (the device tool's folder), else bench/results/disturbance/.
# bench/disturbance_report.py collates them. Assumes the wheels are installed and PYTHONPATH set
# (bench/RUNNING.md).
set -euo pipefail
step=${1:?usage: $0 cpu|cpu_evaluator|compiled|other|evaluator}
out=${OUT:-bench/results/disturbance}
mkdir -p "$out"
pipeline=${PIPELINE:-sd15}
quiet() { grep -v "it/s\]\|batch/s\]\|s/batch\]\|s/it\]\|round/s\]" || true; }
machine() {
  { date -u +%FT%TZ; uname -n; nproc; grep -m1 "model name" /proc/cpuinfo || true
    nvidia-smi -L 2>/dev/null || echo "no GPU"; } > "$out/${step}_machine.txt"
}
machine

case "$step" in
  cpu)
    common=(accel=deepcache "accel.cache_interval=2,3" num_prompts=8 batch_size=2 steps=10 repeats=2)
    rm -rf /tmp/dist_quiet /tmp/dist_busy
    python run.py -m "${common[@]}" hydra.sweep.dir=/tmp/dist_quiet summary_path=/tmp/dist_quiet/all.csv 2>&1 | quiet | tee "$out/cpu_quiet.log"
    hogs=()
    for _ in $(seq $((2 * $(nproc)))); do python -c "while True: pass" & hogs+=($!); done
    python run.py -m "${common[@]}" hydra.sweep.dir=/tmp/dist_busy summary_path=/tmp/dist_busy/all.csv 2>&1 | quiet | tee "$out/cpu_busy.log"
    kill "${hogs[@]}"
    for which in quiet busy; do
      cp /tmp/dist_$which/summary.csv "$out/cpu_${which}_summary.csv"
      python -m accel_bench.postprocess sweep_dir=/tmp/dist_$which out_dir=/tmp/dist_${which}_data include_random=true \
        verify=false "grid.pipelines=[tiny]" "grid.schedulers=[ddim]" "grid.steps=[10]" 2>&1 | tee "$out/cpu_${which}_postprocess.log" || true
    done
    ;;
  cpu_evaluator)
    # identical code, pair mode, target 1.5x: on a quiet machine, then beside CPU-bound processes
    rm -rf /tmp/dist_cpu_ev && python bench/leftover_candidates.py /tmp/dist_cpu_ev tiny
    : > "$out/cpu_evaluator.log"
    for which in quiet busy; do
      hogs=()
      if [ $which = busy ]; then for _ in $(seq $((2 * $(nproc)))); do python -c "while True: pass" & hogs+=($!); done; fi
      python -m accel_bench.evaluate baseline=/tmp/dist_cpu_ev/baseline.py candidate=/tmp/dist_cpu_ev/plain.py pipeline=tiny \
        num_prompts=8 batch_size=4 target_speedup=1.5 out_dir=/tmp/dist_cpu_ev/eval_$which 2>&1 | quiet | tail -n 6 \
        | tee -a "$out/cpu_evaluator.log" || true
      [ ${#hogs[@]} -gt 0 ] && kill "${hogs[@]}"
      cp /tmp/dist_cpu_ev/eval_$which/metrics.json "$out/cpu_evaluator_$which.json"
    done
    ;;
  compiled)
    common=(pipeline=$pipeline pipeline.weights=random steps=50 batch_size=4 num_prompts=16 dtype=fp16 count_flops=false
            accel=deepcache_compile accel.mode=reduce-overhead accel.fullgraph=true interleave=true summary_path=$out/compiled_rows.csv)
    python run.py "${common[@]}" baseline.compile=reduce-overhead hydra.run.dir=/tmp/dist_run_graphs 2>&1 | quiet | tee "$out/compiled_graphs.log"
    python run.py "${common[@]}" hydra.run.dir=/tmp/dist_run_eager 2>&1 | quiet | tee "$out/compiled_eager.log"
    ;;
  other)
    # another process on the same GPU, running large products for the whole run
    python - <<'EOF' &
import time, torch
a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
end = time.time() + 600
while time.time() < end:
    for _ in range(50):
        a @ a
    torch.cuda.synchronize()
EOF
    other=$!
    sleep 10
    echo "other process: pid $other" | tee "$out/other.log"
    python -c "import pynvml; pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0); \
print('NVML sees', [(p.pid, p.usedGpuMemory) for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)])" 2>&1 | tee -a "$out/other.log"
    python run.py pipeline=$pipeline pipeline.weights=random steps=20 batch_size=4 num_prompts=8 dtype=fp16 count_flops=false \
      accel=deepcache summary_path=$out/other_rows.csv hydra.run.dir=/tmp/dist_run_other 2>&1 | quiet | tee -a "$out/other.log"
    kill $other
    ;;
  evaluator)
    rm -rf /tmp/dist_ev && mkdir -p /tmp/dist_ev
    sandbox=()
    python -c "from accel_bench.evaluate.sandbox import SandboxConfig, probe; print(probe(SandboxConfig(), False))" \
      > "$out/evaluator_sandbox.txt" 2>&1 || sandbox=(allow_unsandboxed=true)
    python bench/leftover_candidates.py /tmp/dist_ev "$pipeline"
    for candidate in plain leftover_0.25 leftover_0.5 leftover_1.0 plain_again; do
      python -m accel_bench.evaluate baseline=/tmp/dist_ev/baseline.py candidate=/tmp/dist_ev/${candidate%_again}.py \
        pipeline=$pipeline models.$pipeline=random num_prompts=8 batch_size=4 dtype=fp16 target_speedup=1.1 \
        out_dir=/tmp/dist_ev/eval_$candidate "${sandbox[@]}" 2>&1 | quiet | tail -n 6 | tee -a "$out/evaluator.log" || true
      cp /tmp/dist_ev/eval_$candidate/metrics.json "$out/evaluator_$candidate.json"
    done
    ;;
  *) echo "unknown step $step" >&2; exit 2 ;;
esac
