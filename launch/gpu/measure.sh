#!/usr/bin/env bash
# The GPU numbers of docs/performance.md, from one command on one GPU.
#
#   launch/gpu/measure.sh OUT [PART ...]      PARTs, in this order by default:
#     fused    the fused head at the paper's batch (256 × 512, vocab 32,101), each size at the
#              fewest microbatches that fit and no remat; d256-L3 at two chunk sizes
#     profile  where the d256-L3 step's time goes, plain and fused heads
#     demo     `make demo`'s grid (cpu scale) trained one run at a time, then as batched LR groups
#     torch    per size: PyTorch eager and torch.compile, and JAX's plain and fused heads, all at
#              4 microbatches (the plain head and PyTorch hold the [tokens × V] logits: at one
#              microbatch they do not fit in 80 GB)
#
# SIZES (default "d256-L3 d1024-L24 d768-L12 d512-L6") picks the sizes of `fused` and `torch`, in
# order; the fused head's chunk size for the others is the faster of d256-L3's two (or CHUNK).
# PROFILE_HEADS (default "fused"; the plain head does not fit in one microbatch) and DEMO_ARGS (e.g. --sizes=d128-L2) narrow those parts.
# BENCH_ARGS
# and PROFILE_ARGS are appended to every bench and profile command (the last flag wins), e.g.
# BENCH_ARGS="--batch=4 --seq_len=32 --steps=1" for a quick check of the script on a CPU.
#
# Each part runs in processes of its own under a time limit (LIMIT seconds, default 300), and
# appends to OUT/progress.log (timestamps), OUT/all.log (every command's output) and
# OUT/rows.jsonl (bench rows): a call cut short keeps what it measured. Python and the GPU
# build of JAX are taken as found; nothing is downloaded.
set -uo pipefail

out=${1:?usage: launch/gpu/measure.sh OUT [fused|profile|demo|torch ...]}
shift
parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=(fused profile demo torch)
mkdir -p "$out"
tmp=$(mktemp -d)
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
limit=${LIMIT:-300}
sizes=(${SIZES:-d256-L3 d1024-L24 d768-L12 d512-L6})

# Per size: the microbatches the fused head needs at the paper's batch on an 80 GB device.
declare -A accum=([d256-L3]=1 [d512-L6]=1 [d768-L12]=2 [d1024-L24]=4)

log() { echo "[$(date +%T)] $*" | tee -a "$out/progress.log"; }

step() {  # step NAME COMMAND...: runs COMMAND under the limit, its output into all.log
  local name=$1; shift
  log "start $name: $*"
  echo "===== $name: $*" >>"$out/all.log"
  timeout "$limit" "$@" >"$tmp/$name.log" 2>&1
  local rc=$?
  cat "$tmp/$name.log" >>"$out/all.log"
  log "end $name (exit $rc)"
  grep -E "^(d[0-9]+-L[0-9]+ |\| |LR sensitivity|  d[0-9]|\[demo\]|\[sweep\] done)" \
    "$tmp/$name.log" | tail -n 12
}

bench() {  # bench NAME SIZE MICROBATCHES ARGS...: stability.tools.bench of one size -> rows.jsonl
  local name=$1 size=$2 microbatches=$3; shift 3
  step "$name" "$python" -m stability.tools.bench --sizes="$size" --batch=256 --seq_len=512 \
    --vocab=32101 --attention_impl=fused --remat=none --grad_accum="$microbatches" \
    --steps=5 --out="$tmp/$name" "$@" ${BENCH_ARGS:-}
  [[ -f "$tmp/$name.json" ]] && "$python" -c "import json,sys; d=json.load(open(sys.argv[1]));
[print(json.dumps(dict(r, machine=d['machine'], tokens_per_step=d['tokens_per_step'],
  flops_per_token=d['flops_per_token'][r['size']], peak_flops=d['peak_flops']))) for r in d['rows']]" \
    "$tmp/$name.json" >>"$out/rows.jsonl"
}

best_chunk() {  # CHUNK, or the d256-L3 fused-head chunk size with the shortest step (2048)
  [[ -n ${CHUNK:-} ]] && { echo "$CHUNK"; return; }
  "$python" - "$out/rows.jsonl" <<'EOF' 2>/dev/null || echo 2048
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
fused = [r for r in rows if r["size"] == "d256-L3" and "fused-head c" in r["impl"] and r["step_s"]]
print(min(fused, key=lambda r: r["step_s"])["impl"].split(" c")[-1] if fused else 2048)
EOF
}

log "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
log "$("$python" -c 'import jax, sys; print("python", sys.version.split()[0], "jax", jax.__version__, jax.devices())')"

for part in "${parts[@]}"; do
  case $part in
    fused)
      for size in "${sizes[@]}"; do
        chunks=$(best_chunk)
        [[ $size == d256-L3 ]] && chunks=2048,16384
        bench "fused-$size" "$size" "${accum[$size]:-4}" --torch= --heads=fused \
          --head_chunk_tokens="$chunks"
      done ;;
    profile)
      for head in ${PROFILE_HEADS:-fused}; do
        step "profile-$head" "$python" -m stability.tools.profile_step --size=d256-L3 \
          --batch=256 --seq_len=512 --vocab=32101 --head_impl=$head --top=8 \
          --model=attention_impl=fused --model=head_chunk_tokens="$(best_chunk)" ${PROFILE_ARGS:-}
      done ;;
    demo)
      for mode in off on; do
        start=$(date +%s)
        step "demo-batch-$mode" "$python" -m launch.demo --out="$tmp/demo-$mode" --batch=$mode \
          ${DEMO_ARGS:-}
        log "demo --batch=$mode: $(( $(date +%s) - start )) s wall"
      done ;;
    torch)
      for size in "${sizes[@]}"; do
        bench "torch-$size" "$size" 4 --torch=eager,compile --heads=plain,fused \
          --head_chunk_tokens="$(best_chunk)"
      done ;;
    *) log "unknown part $part" ;;
  esac
done
log "done"
