"""Times the jitted train step, and the same model + optimizer in PyTorch, in one process.

  python -m stability.bench --sizes=d128-L2 --batch=16 --seq_len=128
  python -m stability.bench --sizes=d256-L3,d512-L6,d1024-L24 --batch=256 --seq_len=512 \
      --attention_impl=fused --remat=dots          # on a GPU

Per size: compile time, median step time over `--steps` timed steps after warm-up, tokens/s,
MFU (FLOPs per token from `flops.py`, which counts attention, over the device's peak from the
table there; on CPU the peak is a measured float32 matmul rate), peak device memory, and the
ratio of JAX tokens/s to PyTorch eager and `torch.compile`. With `--members=K`, K runs at K
learning rates trained as one vmapped program are timed too (ms/step and tokens/s per member;
"jax ×" below 1 means the batched program is faster than K sequential steps). Both start from the same weights and
their first-step losses are printed side by side, so the two programs are checked to compute the
same thing before they are compared.
"""

import functools
import resource
import statistics
import time

from absl import app
from absl import flags
import jax
import numpy as np

from configs import base
from stability import flops
from stability import train

_SIZES = flags.DEFINE_list("sizes", ["d128-L2"], "model sizes")
_BATCH = flags.DEFINE_integer("batch", 16, "global batch (sequences)")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "sequence length")
_STEPS = flags.DEFINE_integer("steps", 10, "timed steps (after 2 warm-up steps)")
_DTYPE = flags.DEFINE_enum("dtype", "auto", ["auto", "bfloat16", "float32"],
                           "compute dtype; auto = float32 on CPU, bfloat16 on accelerators")
_ATTENTION = flags.DEFINE_enum("attention_impl", "explicit", ["explicit", "fused"], "attention")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "full", "dots"], "rematerialisation")
_TORCH = flags.DEFINE_list("torch", ["eager", "compile"], "PyTorch references to time ('' = none)")
_VOCAB = flags.DEFINE_integer("vocab", 32101, "vocabulary size (synthetic tokens)")
_MEMBERS = flags.DEFINE_integer(
    "members", 0, "also time K runs at K learning rates trained as one vmapped program "
    "(stability/batched.py) against K sequential steps; 0 = skip")


def bench_config(size: str, dtype: str):
  c = base.get_config(f"size={size},data=synthetic,lr=1e-3")
  c.model.seq_len = _SEQ_LEN.value
  c.model.dtype = dtype
  c.model.attention_impl = _ATTENTION.value
  c.model.remat = _REMAT.value
  c.data.batch_size = _BATCH.value
  c.data.synthetic_vocab_size = _VOCAB.value
  c.train.steps = 1000
  c.opt.warmup_steps = 10
  return c


def time_steps(step_fn, n: int) -> tuple[float, float]:
  """(first call seconds, median of n later calls); each call returns something to block on."""
  t = time.perf_counter()
  jax.block_until_ready(step_fn())
  first = time.perf_counter() - t
  for _ in range(2):
    jax.block_until_ready(step_fn())
  times = []
  for _ in range(n):
    t = time.perf_counter()
    jax.block_until_ready(step_fn())
    times.append(time.perf_counter() - t)
  return first, statistics.median(times)


def peak_memory_gib() -> float | None:
  stats = jax.devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return stats["peak_bytes_in_use"] / 2 ** 30
  return None


def bench_jax(config, tokens_BxL1: np.ndarray) -> dict:
  run = train.Run(config, _VOCAB.value)
  state = run.init_state(0)
  batch = run.global_batch(tokens_BxL1)
  init_params = jax.device_get(state.params)  # the torch reference starts from these
  holder = {"state": state}

  def step():
    holder["state"], metrics = run.train_step(holder["state"], batch, diagnose=False)
    return metrics["train_loss"]

  first_loss = float(run.evaluate(state.params, [batch]))
  compile_s, step_s = time_steps(step, _STEPS.value)
  return {"impl": "jax", "compile_s": compile_s, "step_s": step_s, "first_loss": first_loss,
          "mem_gib": peak_memory_gib(), "params": init_params}


def bench_batched(config, tokens_BxL1: np.ndarray, k: int) -> dict:
  from stability import batched
  configs = []
  for lr in np.geomspace(1e-3, 1e-1, k):
    c = config.copy_and_resolve_references()
    c.opt.peak_lr = float(lr)
    configs.append(c)
  run = batched.BatchedRun(configs, _VOCAB.value)
  holder = {"state": run.init_state(0)}
  batch = run.single.global_batch(tokens_BxL1)

  def step():
    holder["state"], metrics = run.train_step(holder["state"], batch, diagnose=False)
    return metrics["train_loss"]

  compile_s, step_s = time_steps(step, _STEPS.value)
  return {"impl": f"jax ×{k} vmapped", "compile_s": compile_s, "step_s": step_s / k,
          "first_loss": float("nan"), "mem_gib": peak_memory_gib()}


def bench_torch(config, tokens_BxL1: np.ndarray, params, mode: str) -> dict:
  import torch
  from stability import torch_reference as ref

  device = "cuda" if torch.cuda.is_available() else "cpu"
  m = config.model
  model = ref.Decoder(_VOCAB.value, m.d_model, m.num_layers, m.num_heads, m.mlp_ratio,
                      qk_layernorm=m.qk_layernorm != "off", rope_base=m.rope_base)
  ref.copy_from_jax(model, params)
  model.to(device)
  tokens = torch.from_numpy(tokens_BxL1.astype(np.int64)).to(device)
  with torch.no_grad():
    first_loss = float(ref.loss_fn(model(tokens[:, :-1]), tokens[:, 1:], 0.0))
  opt, sched = ref.make_optimizer(model, config.opt, config.train.steps)
  autocast = torch.bfloat16 if m.dtype == "bfloat16" else None
  step = ref.make_train_step(model if mode == "eager" else torch.compile(model), opt, sched,
                             z_loss=config.loss.z_loss, clip_norm=config.opt.clip_norm,
                             autocast_dtype=autocast)
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

  def timed():
    loss = step(tokens)
    sync()
    return loss.cpu().numpy()

  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  compile_s, step_s = time_steps(timed, _STEPS.value)
  mem = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None
  return {"impl": f"torch-{mode}", "compile_s": compile_s, "step_s": step_s,
          "first_loss": first_loss, "mem_gib": mem}


def main(argv):
  del argv
  device_kind = jax.devices()[0].device_kind
  on_cpu = jax.default_backend() == "cpu"
  dtype = _DTYPE.value if _DTYPE.value != "auto" else ("float32" if on_cpu else "bfloat16")
  peak = flops.peak_flops_per_device(device_kind)
  n_dev = jax.device_count()
  print(f"device: {n_dev} × {device_kind} (peak {peak / 1e12:.2f} TFLOP/s each"
        f"{', measured float32 matmul' if on_cpu else ''}); jax {jax.__version__}; dtype {dtype};"
        f" attention {_ATTENTION.value}; remat {_REMAT.value}; batch {_BATCH.value}×{_SEQ_LEN.value}")
  header = (f"{'size':10s} {'impl':14s} {'compile s':>9s} {'ms/step':>9s} {'tokens/s':>10s} "
            f"{'MFU':>6s} {'peak GiB':>8s} {'loss@0':>8s} {'jax ×':>6s}")
  print(header)
  tokens_per_step = _BATCH.value * _SEQ_LEN.value
  rng = np.random.default_rng(0)
  for size in _SIZES.value:
    config = bench_config(size, dtype)
    tokens = rng.integers(0, _VOCAB.value, (_BATCH.value, _SEQ_LEN.value + 1), dtype=np.int32)
    flops_per_token = flops.model_flops_per_token(config.model, _VOCAB.value)
    rows = [bench_jax(config, tokens)]
    params = rows[0].pop("params")
    if _MEMBERS.value > 1:
      rows.append(bench_batched(config, tokens, _MEMBERS.value))
    for mode in filter(None, _TORCH.value):
      try:
        rows.append(bench_torch(config, tokens, params, mode))
      except Exception as e:  # e.g. torch not installed, or no compiler for torch.compile
        print(f"{size:10s} torch-{mode:8s} failed: {type(e).__name__}: {str(e)[:120]}")
    jax_tps = tokens_per_step / rows[0]["step_s"]
    for r in rows:
      tps = tokens_per_step / r["step_s"]
      mfu = tps * flops_per_token / (peak * n_dev) if peak else float("nan")
      mem = f"{r['mem_gib']:8.2f}" if r["mem_gib"] is not None else f"{'-':>8s}"
      print(f"{size:10s} {r['impl']:14s} {r['compile_s']:9.1f} {r['step_s'] * 1e3:9.1f} "
            f"{tps:10.0f} {mfu:6.1%} {mem} {r['first_loss']:8.4f} {jax_tps / tps:6.2f}", flush=True)
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
  print(f"host peak RSS {rss:.2f} GiB")


if __name__ == "__main__":
  app.run(main)
