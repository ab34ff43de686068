#!/usr/bin/env bash
# One host with several GPUs.
#
#   launch/gpu/run.sh python -m stability.main --config=configs/base.py:size=d1024-L24 \
#       --workdir=results/d1024-L24
#       One process drives every GPU of the host (the default, and the simplest): the mesh
#       spans all local GPUs (data-parallel by default; --config.mesh.fsdp=-1 shards state).
#
#   launch/gpu/run.sh --per_gpu [--gpus=8] [--logs=logs/gpu] python -m stability.main ...
#       One process per GPU (JAX multi-controller on one host): process i sees GPU i only and
#       finds the others through JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID,
#       which stability.sharding.maybe_initialize_distributed reads. Process 0 writes the
#       results; every process logs to <logs>/process-<i>.log. SIGTERM / Ctrl-C is passed on to
#       all of them: they agree on a step, checkpoint together and stop.
#
# Several hosts: launch/gpu/slurm.sbatch.
set -euo pipefail

per_gpu=0
gpus=""
logs="logs/gpu"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --per_gpu) per_gpu=1; shift ;;
    --gpus=*) gpus="${1#*=}"; shift ;;
    --logs=*) logs="${1#*=}"; shift ;;
    --) shift; break ;;
    -*) echo "launch/gpu/run.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [[ $# -eq 0 ]]; then
  echo "usage: launch/gpu/run.sh [--per_gpu [--gpus=N] [--logs=DIR]] python -m ..." >&2
  exit 2
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}" PYTHONUNBUFFERED=1

if [[ "$per_gpu" == 0 ]]; then
  exec "$@"
fi

gpus="${gpus:-$(nvidia-smi -L | wc -l)}"
port="${JAX_COORDINATOR_PORT:-$((20000 + RANDOM % 20000))}"
mkdir -p "$logs"
pids=()
for ((i = 0; i < gpus; i++)); do
  CUDA_VISIBLE_DEVICES="$i" JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" \
    JAX_NUM_PROCESSES="$gpus" JAX_PROCESS_ID="$i" "$@" > "$logs/process-$i.log" 2>&1 &
  pids+=("$!")
done
echo "started ${#pids[@]} processes (pids ${pids[*]}); logs in $logs/process-<i>.log"
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' INT TERM
tail -n +1 -f "$logs/process-0.log" --pid="${pids[0]}" &
set +e
status=0
for pid in "${pids[@]}"; do
  while true; do
    wait "$pid"
    rc=$?
    # a signal interrupted `wait` (rc > 128) while the process still runs: wait again
    if [[ $rc -gt 128 ]] && kill -0 "$pid" 2>/dev/null; then continue; fi
    break
  done
  [[ $rc -ne 0 ]] && status=$rc
done
exit "$status"
