#!/usr/bin/env bash
# Every method on the strong baselines (CUDA graphs, the fast recipe), one (pipeline, batch size) per device call:
#
#   bench/strong_baselines.sh sd15 4 [GRID ...]   # GRIDs of conf/sweep/strong.yaml to run (default: all)
#
# Runs `python run.py -m +sweep=strong` for that pipeline and batch size (interleaved: each job
# re-measures its baseline pass for pass; PROMPTS prompts per pass, 16 unless set; images saved),
# stops the sweep after LIMIT seconds (540 unless set) so that what finished is reported, then
# bench/strong_baselines_report.py: the rows, and each compiled method's images against the same
# method's eager images (PSNR), and the sweep's stack every 30 s (bench/stack_sampler: where a call stopped at its
# limit spent its time). Results go to $OUT/<pipeline>_b<batch> (the device tool's folder;
# a local folder elsewhere). Assumes the wheels are installed and PYTHONPATH set (bench/README.md).
set -uo pipefail
pipeline=${1:?usage: $0 PIPELINE BATCH [GRID ...]}
batch=${2:?usage: $0 PIPELINE BATCH [GRID ...]}
shift 2
all=(compile deepcache deepcache_compile tome tome_compile tgate tgate_compile tgate_tome tgate_tome_compile tgate_deepcache
     tgate_deepcache_compile deepcache_tome deepcache_tome_compile compile_step deepcache_step deepcache_step_eager tgate_step tome_step fast deepcache_fast
     tgate_fast tome_fast)
keep=("${@:-${all[@]}}")
drop=()
for grid in "${all[@]}"; do
  [[ " ${keep[*]} " == *" $grid "* ]] || drop+=("~hydra.sweeper.grids.$grid")
done
name=${pipeline}_b${batch}
out=${OUT:-bench/results/strong_baselines}/$name
sweep=$(mkdir -p /tmp/strong && mktemp -d "/tmp/strong/$name.XXXXXX")   # one per call; saved images stay on the machine
mkdir -p "$out"
nvidia-smi -L | tee "$out/gpus.txt"
PYTHONPATH="$PWD/bench/stack_sampler${PYTHONPATH:+:$PYTHONPATH}" STACK_LOG="$out/stacks.txt" \
  timeout "${LIMIT:-540}" python run.py -m +sweep=strong "${drop[@]}" pipeline="$pipeline" batch_size="$batch" \
  num_prompts="${PROMPTS:-16}" save_images=true hydra.sweep.dir="$sweep" summary_path="$sweep/all.csv" 2>&1 \
  | grep -v "it/s\]\|batch/s\]\|s/batch\]\|s/it\]" | tail -c 20000 > "$out/sweep.log"
echo "sweep exit ${PIPESTATUS[0]} (124: stopped at the limit)" | tee -a "$out/sweep.log"
cp "$sweep/summary.csv" "$out/summary.csv"
python bench/strong_baselines_report.py "$sweep" --out "$out"
