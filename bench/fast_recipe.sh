#!/usr/bin/env bash
# The production recipe's rows, one process per row, most telling first, until a deadline:
#
#   MODE=reduce-overhead bench/fast_recipe.sh sd15 4
#
# 0 the recipe over eager; 1 DeepCache on the recipe over the fast baseline; 2 the same over eager;
# 3 DeepCache eager (the images the recipe's DeepCache is compared with); 4 DeepCache on the recipe with
# the whole denoising step captured (accel.compile_targets=[step,vae_decoder]) over eager, 5 the same over
# the fast baseline on the whole step; 6 ToMe and 7 T-GATE on the recipe over the fast baseline (T-GATE's
# without fused QKV, which its attention bypasses). MODE is
# torch.compile's mode on both sides (the recipe's own is max-autotune, whose autotuning outlasts a
# 10-minute device call on a fresh machine). Each process finds the graphs the ones before it compiled in
# inductor's cache. Stops starting rows LIMIT seconds (540 unless set) after it began; PROMPTS prompts
# per pass (8 unless set), DTYPE (fp16 unless set), interleaved, images saved. ROWS picks rows ("0 1 2 3 4 5 6 7"
# unless set; empty: none); SWEEP names the folder the rows go to (a new one in /tmp/strong unless set): two calls on one
# machine with the same SWEEP and ROWS="0 1 2 3", then ROWS="4 5 6 7", give one table. Writes
# $OUT/fast_<pipeline>_b<batch>/ (the rows, per-row logs and stack samples (bench/stack_sampler),
# bench/strong_baselines_report.py's table) and leaves the run folders in the sweep folder.
set -uo pipefail
pipeline=${1:?usage: $0 PIPELINE BATCH}
batch=${2:?usage: $0 PIPELINE BATCH}
mode=${MODE:-max-autotune}
name=fast_${pipeline}_b${batch}
out=${OUT:-bench/results/strong_baselines}/$name
sweep=${SWEEP:-$(mkdir -p /tmp/strong && mktemp -d "/tmp/strong/$name.XXXXXX")}
rows=" ${ROWS-0 1 2 3 4 5 6 7} "
mkdir -p "$sweep"
end=$(($(date +%s) + ${LIMIT:-540}))
mkdir -p "$out"
nvidia-smi -L | tee "$out/gpus.txt"
common=(pipeline="$pipeline" pipeline.weights=random scheduler=ddim steps=50 batch_size="$batch"
        num_prompts="${PROMPTS:-8}" dtype="${DTYPE:-fp16}" interleave=true save_images=true summary_path="$sweep/summary.csv")
on_recipe=(baseline.recipe=fast baseline.compile="$mode")
deepcache=(accel.cache_interval=3 accel.cache_branch_id=0)
whole_step=('accel.compile_targets=[step,vae_decoder]')
row() {  # row N OVERRIDES...: run.py in $sweep/N, stopped at the deadline
  local n=$1 left=$((end - $(date +%s)))
  shift
  [[ $rows == *" $n "* ]] || return 0
  if ((left < 30)); then echo "row $n not started: the deadline" | tee -a "$out/rows.log"; return; fi
  PYTHONPATH="$PWD/bench/stack_sampler${PYTHONPATH:+:$PYTHONPATH}" STACK_LOG="$out/row$n.stacks.txt" \
    timeout "$left" python run.py "${common[@]}" hydra.run.dir="$sweep/$n" "$@" 2>&1 \
    | grep -v "it/s\]\|batch/s\]\|round/s\]\|s/batch\]\|s/it\]\|s/round\]" | tail -c 6000 > "$out/row$n.log"
  echo "row $n exit ${PIPESTATUS[0]} (124: stopped at the deadline): $*" | tee -a "$out/rows.log"
}
row 0 accel=fast accel.mode="$mode"
row 1 accel=deepcache_fast accel.mode="$mode" "${deepcache[@]}" "${on_recipe[@]}"
row 2 accel=deepcache_fast accel.mode="$mode" "${deepcache[@]}"
row 3 accel=deepcache "${deepcache[@]}"
row 4 accel=deepcache_fast accel.mode="$mode" "${deepcache[@]}" "${whole_step[@]}"
row 5 accel=deepcache_fast accel.mode="$mode" "${deepcache[@]}" "${whole_step[@]}" "${on_recipe[@]}" baseline.whole_step=true
row 6 accel=tome_fast accel.mode="$mode" accel.ratio=0.5 "${on_recipe[@]}"
row 7 accel=tgate_fast accel.mode="$mode" accel.gate_step=null accel.gate_fraction=0.4 "${on_recipe[@]}"
if [[ ! -f $sweep/summary.csv ]]; then
  echo "no row finished: where each row spent its time is in $out/row*.stacks.txt" | tee -a "$out/rows.log"
  exit 1
fi
cp "$sweep/summary.csv" "$out/summary.csv"
python bench/strong_baselines_report.py "$sweep" --out "$out"
