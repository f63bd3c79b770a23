#!/usr/bin/env bash
# The published-speedup runs on a device machine, resumable across its calls: the timer cross-check, then
# +sweep=published for SD1.5, SD2.1 and SDXL (SDXL split by batch size), the sweep's SDXL ToMe job
# at batch 1 on its own, and the GPU busy-time profile of T-GATE and DeepCache, one step after another,
# each under `timeout` with what is left of this call's seconds. A finished step is marked done in
# STATE and skipped by the next call; a step cut off resumes there from its sweep dir (a sweep skips
# its finished jobs; only the job running at the cut is lost). STATE must outlive the call: a path
# on the machine, such as /tmp/published, while the machine stays warm between calls. Each call
# copies every step's summary.csv (as published_<step>.csv), the cross-check and the profile to OUT.
#
#   bash bench/published_runs.sh $OUT /tmp/published 580                 # every step, in order
#   bash bench/published_runs.sh $OUT /tmp/published 580 xcheck sd21      # only these steps
#
# Steps: xcheck sd15 sd21 sdxl_b1 sdxl_b4 sdxl_b1_tome busy_sdxl_b4. The last two are not in the
# default list: sdxl_b1_tome is the one job of sdxl_b1 that a new machine runs on its own (with its own
# baseline) rather than the whole sweep again.
set -u
if [ $# -lt 3 ]; then
  echo "usage: bash bench/published_runs.sh OUT STATE SECONDS [step ...]" >&2
  exit 2
fi
out=$1 state=$2 seconds=$3
shift 3
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(xcheck sd15 sd21 sdxl_b1 sdxl_b4)
mkdir -p "$out" "$state"
started=$SECONDS

command_for() {
  local sweep="hydra.sweep.dir=$state/$1 summary_path=$state/summary_log.csv"
  case $1 in
    xcheck) echo "python bench/timer_crosscheck.py pipeline=sd15 pipeline.weights=random accel=deepcache
                  accel.cache_interval=3 accel.cache_branch_id=0 steps=50 batch_size=4 dtype=fp16
                  --out $state/timer_crosscheck_sd15.json" ;;
    sd15|sd21) echo "python run.py -m +sweep=published pipeline=$1 $sweep" ;;
    sdxl_b1|sdxl_b4) echo "python run.py -m +sweep=published pipeline=sdxl batch_size=${1#sdxl_b} $sweep" ;;
    sdxl_b1_tome) echo "python run.py pipeline=sdxl pipeline.weights=random scheduler=ddim steps=50 batch_size=1
                        dtype=fp16 accel=tome accel.ratio=0.5 hydra.run.dir=$state/$1/run
                        summary_path=$state/$1/summary.csv" ;;
    busy_sdxl_b4) echo "python bench/gpu_busy_profile.py pipeline=sdxl pipeline.weights=random scheduler=ddim
                        steps=25 batch_size=4 dtype=fp16 --out $state/gpu_busy_sdxl_b4.json
                        --method 'accel=tgate accel.gate_step=null accel.gate_fraction=0.4'
                        --method 'accel=deepcache accel.cache_interval=3 accel.cache_branch_id=0'" ;;
    *) return 1 ;;
  esac
}

for step in "${steps[@]}"; do
  if ! command_for "$step" > /dev/null; then
    echo "step: '$step' is not one of xcheck sd15 sd21 sdxl_b1 sdxl_b4 sdxl_b1_tome busy_sdxl_b4" >&2
    exit 2
  fi
done

for step in "${steps[@]}"; do
  [ -f "$state/$step.done" ] && { echo "== $step: done in an earlier call"; continue; }
  left=$((seconds - (SECONDS - started)))
  [ $left -ge 30 ] || { echo "== $step: not started, ${left} s left"; continue; }
  cmd=$(command_for "$step" | tr -s ' \n' ' ')  # one line: bash -c would end the command at a newline
  echo "== $step: started at $((SECONDS - started)) s with $left s left: $cmd"
  # the progress bars redraw in place; keep the lines a reader needs
  timeout "$left" bash -c "exec $cmd" 2>&1 | tr '\r' '\n' \
    | grep -E '^\[sweep\]|speedup|warm-up|Error|error|within_3pct|relative_difference|wall' | tee "$state/$step.log"
  status=${PIPESTATUS[0]}
  echo "== $step: exit $status at $((SECONDS - started)) s"
  # a sweep is done when every job is ok; one with failed or invalid jobs re-runs those next time
  if [ "$status" -eq 0 ] && { [[ "$cmd" != *" -m "* ]] || grep -q ', 0 failed, 0 invalid,' "$state/$step.log"; }; then
    touch "$state/$step.done"
  fi
done

for dir in "$state"/*/; do
  [ -f "$dir/summary.csv" ] && cp "$dir/summary.csv" "$out/published_$(basename "$dir").csv"
done
for file in timer_crosscheck_sd15.json gpu_busy_sdxl_b4.json; do
  [ -f "$state/$file" ] && cp "$state/$file" "$out/"
done
ls "$state"
