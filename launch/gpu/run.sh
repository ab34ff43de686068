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
#       all of them: they agree on a step, checkpoint together and stop. A process that fails
#       stops the others; one still running $STABILITY_SIGTERM_GRACE_S + 30 s after the stop
#       (default 150 s) is killed. If this script itself is killed, the processes see that
#       their launcher is gone and stop (stability/watchdog.py).
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
# A process still running this long after it was asked to stop is killed.
grace="$(( ${STABILITY_SIGTERM_GRACE_S:-120} + 30 ))"
mkdir -p "$logs"
pids=()
for ((i = 0; i < gpus; i++)); do
  CUDA_VISIBLE_DEVICES="$i" JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" \
    JAX_NUM_PROCESSES="$gpus" JAX_PROCESS_ID="$i" STABILITY_LAUNCHER_PID="$$" \
    "$@" > "$logs/process-$i.log" 2>&1 &
  pids+=("$!")
done
echo "started ${#pids[@]} processes (pids ${pids[*]}); logs in $logs/process-<i>.log"

# Stopping: SIGTERM to every process (and SIGCONT, for a stopped one), SIGKILL after the grace.
kill_at=0
stop_all() {
  [[ $kill_at -ne 0 ]] && return
  kill_at=$(( SECONDS + grace ))
  kill -TERM "${pids[@]}" 2>/dev/null || true
  kill -CONT "${pids[@]}" 2>/dev/null || true
}
trap 'echo "launch/gpu/run.sh: stopping every process" >&2; stop_all' INT TERM HUP
tail -n +1 -f "$logs/process-0.log" --pid="${pids[0]}" &

# Wait for all; the first to fail stops the others (a peer of a failed process would wait forever).
set +e
status=0
declare -A done_pids=()
while [[ ${#done_pids[@]} -lt ${#pids[@]} ]]; do
  for i in "${!pids[@]}"; do
    pid="${pids[$i]}"
    [[ -n "${done_pids[$pid]:-}" ]] && continue
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null; rc=$?
      done_pids[$pid]=1
      if [[ $rc -ne 0 ]]; then
        [[ $status -eq 0 ]] && status=$rc
        echo "launch/gpu/run.sh: process $i exited with $rc; stopping the others" >&2
        stop_all
      fi
    fi
  done
  if [[ $kill_at -ne 0 && $SECONDS -ge $kill_at ]]; then
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  sleep 0.5
done
exit "$status"
