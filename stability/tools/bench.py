"""Times the jitted train step, and the same model + optimizer in PyTorch, from one command.

  python -m stability.tools.bench --sizes=d128-L2 --batch=16 --seq_len=128
  python -m stability.tools.bench --sizes=d256-L3,d512-L6,d768-L12,d1024-L24 --batch=256 \
      --seq_len=512 --grad_accum=4 --attention_impl=fused --remat=dots --members=7  # a GPU

Per size: compile time, median step time over `--steps` timed steps after warm-up, tokens/s,
MFU (FLOPs per token from `flops.py`, which counts attention, over the device's peak from the
table there; on CPU the peak is a measured float32 matmul rate), peak device memory, and the
ratio of JAX tokens/s to PyTorch eager and `torch.compile`. With `--members=M`, M runs at M
learning rates trained as one vmapped program are timed too (per member); its "jax ×" below 1
means the batched program is faster than M sequential steps. Both frameworks start from the same
weights and their first losses are printed side by side, so the two programs are checked to
compute the same thing before they are compared. A row that fails (out of memory, say) is
reported as such and the others still run. `--out` also writes the rows as JSON and the summary
as a markdown table.
"""

import os

# The PyTorch reference (another process) shares the accelerator: JAX must grow its memory pool
# on demand rather than reserve 75% of the device when it starts.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from concurrent import futures  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from stability import compiler_options  # noqa: E402
from stability import config_schema  # noqa: E402
from stability import flops  # noqa: E402
from stability import model as model_lib  # noqa: E402
from stability import run as run_lib  # noqa: E402
from stability import runtime  # noqa: E402
from stability import sizes  # noqa: E402
from stability import step_memory  # noqa: E402
from stability import timing  # noqa: E402

_SIZES = flags.DEFINE_list("sizes", ["d128-L2"], "model sizes")
_BATCH = flags.DEFINE_integer("batch", 16, "global batch (sequences)")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "sequence length")
_GRAD_ACCUM = flags.DEFINE_integer(
    "grad_accum", 0,
    "microbatches per step, in both frameworks (strided rows, as train.grad_accum); 0: as the cpu "
    "scale trains on a CPU (microbatches that fit the cache, step_memory.microbatches_for_cache), "
    "1 elsewhere")
_STEPS = flags.DEFINE_integer("steps", 10, "timed steps (after warm-up: see --warmup_s)")
_WARMUP_S = flags.DEFINE_float(
    "warmup_s", 2.0, "untimed steps first, for at least this many seconds (and 2 steps), in both "
    "frameworks: the first seconds after a compile run slower")
_DTYPE = flags.DEFINE_enum("dtype", "auto", ["auto", "bfloat16", "float32"],
                           "compute dtype; auto = float32 on CPU, bfloat16 on accelerators")
_ATTENTION = flags.DEFINE_enum("attention_impl", "explicit", ["explicit", "fused", "chunked"],
                                "attention (model.attention_impl)")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "full", "dots"], "rematerialisation")
_TORCH = flags.DEFINE_list("torch", ["eager", "compile"], "PyTorch references to time ('' = none)")
_VOCAB = flags.DEFINE_integer("vocab", 32101, "vocabulary size (synthetic tokens)")
_HEADS = flags.DEFINE_list(
    "heads", ["plain"], "output head + loss implementations to time (model.head_impl): plain "
    "(row `jax`), fused (row `jax fused-head`)")
_HEAD_CHUNK_TOKENS = flags.DEFINE_list(
    "head_chunk_tokens", ["2048"], "fused head: tokens per chunk of logits "
    "(model.head_chunk_tokens); several values time one fused row each")
_MEMBERS = flags.DEFINE_integer(
    "members", 0, "also time M runs at M learning rates trained as one vmapped program "
    "(stability/run.py) against M sequential steps; 0 = skip")
_MEMBERS_GRAD_ACCUM = flags.DEFINE_integer(
    "members_grad_accum", 0, "microbatches per step of the vmapped program (0: as the single run): "
    "M members hold M times the activations, so on a device they need M times the microbatches")
_HOST_MEMORY = flags.DEFINE_enum(
    "host_memory", "keep", ["keep", "release"],
    "on a CPU, in both frameworks: keep freed memory for reuse as training does "
    "(stability/host_memory.py), or glibc's default of unmapping large blocks when freed")
_LOG_STEP = flags.DEFINE_bool(
    "log_step", True, "also time the log step (every diagnostic), plain head")
_OUT = flags.DEFINE_string("out", "", "also write <out>.json (every row) and <out>.md (summary)")


@dataclasses.dataclass
class Row:
  size: str
  impl: str
  step_s: float | None = None  # per member for a batched row
  compile_s: float | None = None  # the first call: tracing, compiling and one step
  first_loss: float | None = None
  mem_gib: float | None = None  # the process's device peak so far: a row after a bigger one
  # inherits its peak (accelerators only); compiled_gib is the row's own
  compiled_gib: float | None = None  # the compiled step's memory analysis (any backend)
  error: str | None = None


def bench_config(size: str, dtype: str):
  c = config_schema.default_config()
  sizes.apply(c.model, size)
  c.data.source = "synthetic"
  c.opt.peak_lr = 1e-3
  c.model.seq_len = _SEQ_LEN.value
  c.model.dtype = dtype
  c.model.attention_impl = _ATTENTION.value
  c.model.remat = _REMAT.value
  c.data.batch_size = _BATCH.value
  c.data.synthetic.vocab_size = _VOCAB.value
  c.train.grad_accum = _GRAD_ACCUM.value or (
      step_memory.microbatches_for_cache(c.model, c.data.batch_size, _VOCAB.value)
      if jax.default_backend() == "cpu" else 1)
  c.train.steps = 1000
  c.opt.warmup_steps = 10
  return c


def jax_peak_memory_gib() -> float | None:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2 ** 30
  return None


def check_rows(tokens_BxL1: np.ndarray, config) -> np.ndarray:
  """The rows both frameworks compute loss@0 on: one microbatch, which fits wherever a step does."""
  return tokens_BxL1[:_BATCH.value // config.train.grad_accum]


def initial_params(config):
  """The JAX initialisation on the host: the weights both frameworks start from."""
  run = run_lib.Run([config], _VOCAB.value)
  state = run.init_state(0)
  params = jax.device_get(state.params)
  del state
  return params


def time_train_steps(run, state, batch, diagnose: bool = False) -> tuple[float, float]:
  """`timing.time_steps` of `run.train_step` (M ≥ 1 members), the state carried along; with
  `diagnose`, the log step (every diagnostic of the paper)."""
  holder = {"state": state}
  del state  # donated by the first step

  def step():
    holder["state"], metrics = run.train_step(holder["state"], batch, diagnose=diagnose)
    jax.block_until_ready(metrics["train_loss"])

  return timing.time_steps(step, _STEPS.value, warmup_s=_WARMUP_S.value)


def compiled_memory_gib(run, state, batch) -> float:
  """The train step's memory by the compiler's analysis: arguments, temporaries, and outputs
  that do not reuse a donated argument."""
  with run.context():
    mem = run.compiled_step(False).lower(state, batch, run.hypers).compile().memory_analysis()
  out_extra = max(0, mem.output_size_in_bytes - mem.alias_size_in_bytes)
  return (mem.argument_size_in_bytes + mem.temp_size_in_bytes + out_extra) / 2 ** 30


def head_variants() -> list[tuple[str, int]]:
  """(head_impl, tokens per chunk) of each JAX row: the fused head once per chunk size."""
  chunks = [int(c) for c in _HEAD_CHUNK_TOKENS.value]
  return [(h, c) for h in _HEADS.value for c in (chunks if h == "fused" else chunks[:1])]


def head_row(head_impl: str, chunk_tokens: int) -> str:
  if head_impl == "plain":
    return "jax"
  suffix = f" c{chunk_tokens}" if len(_HEAD_CHUNK_TOKENS.value) > 1 else ""
  return f"jax {head_impl}-head{suffix}"


def bench_jax(config, tokens_BxL1: np.ndarray, head_impl: str, chunk_tokens: int) -> Row:
  """The jitted step with `head_impl`; with --steps=0 only its compiled memory."""
  t = time.perf_counter()
  config = config.copy_and_resolve_references()
  config.model.head_impl = head_impl
  config.model.head_chunk_tokens = chunk_tokens
  row = head_row(head_impl, chunk_tokens)
  run = run_lib.Run([config], _VOCAB.value)
  state = run.init_state(0)
  first_loss = None  # only needed beside a PyTorch row, and its compile is not free on a GPU
  if any(_TORCH.value) or len(head_variants()) > 1:
    first_loss = float(run.evaluate(state.params, [run.global_batch(check_rows(tokens_BxL1, config))])[0])
  print(f"    initialised in {time.perf_counter() - t:.1f} s", flush=True)
  batch = run.global_batch(tokens_BxL1)
  compiled = compiled_memory_gib(run, state, batch)
  if not _STEPS.value:
    return Row("", row, None, None, first_loss, None, compiled)
  compile_s, step_s = time_train_steps(run, state, batch)
  return Row("", row, step_s, compile_s, first_loss, jax_peak_memory_gib(),
             compiled)


def bench_log_step(config, tokens_BxL1: np.ndarray) -> Row:
  """The log step (`diagnose=True`: attention logits, norms, per-tensor RMS), which training
  takes every `log_every` steps."""
  run = run_lib.Run([config.copy_and_resolve_references()], _VOCAB.value)
  compile_s, step_s = time_train_steps(run, run.init_state(0), run.global_batch(tokens_BxL1),
                                       diagnose=True)
  return Row("", "jax log step", step_s, compile_s)


def bench_batched(config, tokens_BxL1: np.ndarray, k: int) -> Row:
  configs = []
  for lr in np.geomspace(1e-3, 1e-1, k):
    c = config.copy_and_resolve_references()
    c.opt.peak_lr = float(lr)
    c.train.grad_accum = _MEMBERS_GRAD_ACCUM.value or config.train.grad_accum
    configs.append(c)
  run = run_lib.Run(configs, _VOCAB.value)
  compile_s, step_s = time_train_steps(run, run.init_state(0), run.global_batch(tokens_BxL1))
  return Row("", f"jax {k} LRs vmap", step_s / k, compile_s, None, jax_peak_memory_gib())


def bench_torch(config, tokens_BxL1: np.ndarray, params, mode: str) -> Row:
  """The PyTorch reference, in a process of its own: the two frameworks never share a process
  (nor its CUDA context, threads or compiler workers), and a crash there is only this row's."""
  from stability.tools import torch_reference
  with futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
    r = pool.submit(torch_reference.benchmark, config, tokens_BxL1, params, mode,
                    vocab_size=_VOCAB.value, steps=_STEPS.value,
                    check_rows=len(check_rows(tokens_BxL1, config)), warmup_s=_WARMUP_S.value,
                    keep_host_memory=_HOST_MEMORY.value == "keep").result()
  return Row("", f"torch {mode}", **r)


def guarded(size: str, impl: str, fn) -> Row:
  """Runs one measurement; a failure (out of memory, no compiler, ...) becomes the row's error."""
  print(f"  {size} {impl} ...", flush=True)
  try:
    row = fn()
  except Exception as e:  # reported in the table; the other rows still run
    text = f"{type(e).__name__}: {e}"
    oom = "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()
    row = Row("", impl, error="out of memory" if oom else text.splitlines()[0][:160])
  row.size, row.impl = size, impl
  gc.collect()
  return row


def format_row(r: Row, tokens_per_step: int, flops_per_token: float, peak: float | None,
               jax_tps: float | None) -> str:
  if r.error:
    return f"{r.size:10s} {r.impl:16s} {r.error}"
  compiled = f"{r.compiled_gib:9.2f}" if r.compiled_gib is not None else f"{'-':>9s}"
  if r.step_s is None:  # --steps=0: compiled memory only
    return f"{r.size:10s} {r.impl:16s} {'-':>9s} {'-':>9s} {'-':>10s} {'-':>6s} {'-':>8s} {compiled}"
  tps = tokens_per_step / r.step_s
  mfu = f"{tps * flops_per_token / peak:6.1%}" if peak else f"{'-':>6s}"
  mem = f"{r.mem_gib:8.2f}" if r.mem_gib is not None else f"{'-':>8s}"
  loss = f"{r.first_loss:8.4f}" if r.first_loss is not None else f"{'':8s}"
  ratio = f"{jax_tps / tps:6.2f}" if jax_tps else f"{'-':>6s}"
  return (f"{r.size:10s} {r.impl:16s} {r.compile_s:9.1f} {r.step_s * 1e3:9.1f} {tps:10.0f} "
          f"{mfu} {mem} {compiled} {loss} {ratio}")


def summary_table(rows: list[Row], tokens_per_step: int, flops_per_token: dict, peak) -> str:
  """The docs/performance.md table: one line per size and JAX head implementation."""
  lines = ["| size | JAX | tokens/s | MFU | JAX ÷ torch eager | JAX ÷ torch.compile | "
           "batched LR sweep speed-up | log step ÷ step |", "|---|---|---|---|---|---|---|---|"]
  ok = lambda r: r is not None and r.error is None and r.step_s is not None
  for size in dict.fromkeys(r.size for r in rows):
    by_impl = {r.impl: r for r in rows if r.size == size}
    batched = next((r for i, r in by_impl.items() if "vmap" in i), None)
    for impl in [i for i in by_impl if i.startswith("jax") and "vmap" not in i
                 and i != "jax log step"]:
      jax_row = by_impl[impl]
      if not ok(jax_row):
        lines.append(f"| {size} | {impl} | {jax_row.error or 'not timed'} | | | | | |")
        continue
      tps = tokens_per_step / jax_row.step_s
      mfu = f"{tps * flops_per_token[size] / peak:.1%}" if peak else "-"

      def versus(other):
        r = by_impl.get(other)
        return f"{r.step_s / jax_row.step_s:.2f}" if ok(r) else (r.error if r else "not run")

      speedup = ("" if impl != "jax" else f"{jax_row.step_s / batched.step_s:.2f}×"
                 if ok(batched) else (batched.error if batched else "not run"))
      log = by_impl.get("jax log step")
      log_ratio = f"{log.step_s / jax_row.step_s:.2f}" if impl == "jax" and ok(log) else ""
      lines.append(f"| {size} | {impl} | {tps:,.0f} | {mfu} | {versus('torch eager')} | "
                   f"{versus('torch compile')} | {speedup} | {log_ratio} |")
  return "\n".join(lines)


def microbatch_label(configs) -> str:
  """The microbatches per step: one number, or one per size where they differ."""
  per_size = {size: c.train.grad_accum for size, c in configs.items()}
  if len(set(per_size.values())) == 1:
    return str(next(iter(per_size.values())))
  return "(" + ", ".join(f"{size}: {m}" for size, m in per_size.items()) + ")"


def describe_machine(dtype: str, peak_each: float | None, attention: str, microbatches: str) -> str:
  """One line: devices, versions and the settings every row shares."""
  n_dev, device_kind = jax.device_count(), jax.devices()[0].device_kind
  on_cpu = jax.default_backend() == "cpu"
  versions = f"jax {jax.__version__}"
  if any(_TORCH.value):
    try:
      import torch
      versions += f", torch {torch.__version__}"
    except ImportError:
      pass
  vmapped_accum = (f" ({_MEMBERS_GRAD_ACCUM.value} when vmapped)"
                   if _MEMBERS_GRAD_ACCUM.value else "")
  peak = f"peak {peak_each / 1e12:.2f} TFLOP/s each" if peak_each else "peak unknown"
  return (f"{n_dev} × {device_kind} ({peak}{', measured float32 matmul' if on_cpu else ''}); "
          f"{versions}; dtype {dtype}; attention {attention}; remat {_REMAT.value}; batch "
          f"{_BATCH.value}×{_SEQ_LEN.value} in {microbatches} microbatch(es){vmapped_accum}; "
          f"vocab {_VOCAB.value}; {ynn_label()}{time.strftime('%Y-%m-%d')}")


def ynn_label() -> str:
  """Says so when the JAX programs compile without YNNPACK fusions (stability.compiler_options)."""
  return "YNNPACK fusions off; " if compiler_options.ynn_fusions_off(_VOCAB.value) else ""


def attention_label(configs: dict, dtype: str) -> str:
  if _ATTENTION.value != "fused":
    return _ATTENTION.value
  m = next(iter(configs.values())).model
  backend = model_lib.fused_attention_backend(jax.default_backend(), dtype,
                                              m.d_model // m.num_heads)
  return f"fused ({backend or 'xla'})"


def measure(configs: dict, tokens: dict, record) -> None:
  """Every row: PyTorch first, for every size (JAX's memory pool grows and is not handed back to
  the device, so the reference runs while this process holds no more than the initial weights),
  then JAX, then the batched LR group."""
  for size, config in configs.items():
    modes = [m for m in _TORCH.value if m]
    if modes:
      params = initial_params(config)
      for mode in modes:
        record(guarded(size, f"torch {mode}",
                       lambda: bench_torch(config, tokens[size], params, mode)))
  for size, config in configs.items():
    for head, chunk in head_variants():
      record(guarded(size, head_row(head, chunk),
                     lambda: bench_jax(config, tokens[size], head, chunk)))
    if _LOG_STEP.value:
      record(guarded(size, "jax log step", lambda: bench_log_step(config, tokens[size])))
    if _MEMBERS.value > 1:
      record(guarded(size, f"jax {_MEMBERS.value} LRs vmap",
                     lambda: bench_batched(config, tokens[size], _MEMBERS.value)))


def print_rows(rows: list[Row], sizes, tokens_per_step: int, flops_per_token: dict, peak) -> None:
  print(f"{'size':10s} {'impl':16s} {'compile s':>9s} {'ms/step':>9s} {'tokens/s':>10s} "
        f"{'MFU':>6s} {'peak GiB':>8s} {'step GiB':>9s} {'loss@0':>8s} {'jax ×':>6s}")
  for size in sizes:
    size_rows = [r for r in rows if r.size == size]
    jax_row = next((r for r in size_rows if r.impl == "jax" and not r.error and r.step_s), None)
    jax_tps = tokens_per_step / jax_row.step_s if jax_row else None
    order = sorted(size_rows, key=lambda r: (not r.impl.startswith("jax"), r.impl))
    for r in order:
      print(format_row(r, tokens_per_step, flops_per_token[size], peak, jax_tps))


def main(argv):
  del argv
  if _HOST_MEMORY.value == "keep":
    runtime.keep_freed_host_memory()
  on_cpu = jax.default_backend() == "cpu"
  dtype = _DTYPE.value if _DTYPE.value != "auto" else ("float32" if on_cpu else "bfloat16")
  peak_each = flops.peak_flops_per_device(jax.devices()[0].device_kind)
  peak = peak_each * jax.device_count() if peak_each else None
  configs = {size: bench_config(size, dtype) for size in _SIZES.value}
  machine = describe_machine(dtype, peak_each, attention_label(configs, dtype),
                             microbatch_label(configs))
  print(f"device: {machine}", flush=True)

  tokens_per_step = _BATCH.value * _SEQ_LEN.value
  rng = np.random.default_rng(0)
  tokens = {size: rng.integers(0, _VOCAB.value, (_BATCH.value, _SEQ_LEN.value + 1),
                               dtype=np.int32) for size in configs}
  flops_per_token = {size: flops.model_flops_per_token(c.model, _VOCAB.value)
                     for size, c in configs.items()}
  rows = []

  def record(row: Row) -> None:
    """Prints the row and rewrites --out.json: a run cut short keeps what it measured."""
    rows.append(row)
    if row.error:
      print(f"    {row.error}", flush=True)
    elif row.step_s:
      print(f"    {row.step_s * 1e3:.1f} ms/step (compile {row.compile_s:.1f} s)", flush=True)
    else:
      print(f"    compiled step {row.compiled_gib:.2f} GiB", flush=True)
    if _OUT.value:
      with open(_OUT.value + ".json", "w") as f:
        json.dump({"machine": machine, "tokens_per_step": tokens_per_step,
                   "flops_per_token": flops_per_token, "peak_flops": peak,
                   "rows": [dataclasses.asdict(r) for r in rows]}, f, indent=1)

  measure(configs, tokens, record)
  print_rows(rows, configs, tokens_per_step, flops_per_token, peak)
  table = summary_table(rows, tokens_per_step, flops_per_token, peak)
  print(table)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
  print(f"host peak RSS {rss:.2f} GiB")
  if _OUT.value:
    with open(_OUT.value + ".md", "w") as f:
      f.write(f"{machine}\n\n{table}\n")


if __name__ == "__main__":
  app.run(main)
