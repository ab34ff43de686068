"""Parameter and FLOP accounting, and the peak FLOP/s of accelerators (for MFU).

Training FLOPs per token follow PaLM (App. B) with the causal halving MaxText uses:
  6·(N + V·d)      every matmul weight, forward + backward (N non-embedding, V·d the head)
+ 6·L·S·d          attention scores and values (12·L·S·d, halved because the mask is causal)
The input embedding is a lookup and costs nothing.
"""

import functools
import time

import numpy as np


def non_embedding_params(d_model: int, num_layers: int, mlp_ratio: int = 4) -> int:
  """Kernels of the blocks: 4·d² attention + 2·mlp_ratio·d² MLP per layer (= 12·L·d²)."""
  return num_layers * (4 + 2 * mlp_ratio) * d_model * d_model


def train_flops_per_token(d_model: int, num_layers: int, seq_len: int, vocab_size: int,
                          mlp_ratio: int = 4) -> float:
  n = non_embedding_params(d_model, num_layers, mlp_ratio)
  return 6.0 * (n + vocab_size * d_model) + 6.0 * num_layers * seq_len * d_model


def model_flops_per_token(model_cfg, vocab_size: int) -> float:
  return train_flops_per_token(model_cfg.d_model, model_cfg.num_layers, model_cfg.seq_len,
                               vocab_size, model_cfg.mlp_ratio)


# Dense bf16 peak FLOP/s per chip. Never assume one: look the device up, or measure on CPU.
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,  # v5e
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,  # v6e (Trillium)
    "TPU v6e": 918e12,
}


# Cloud TPU names (`v5e`, or a slice: `v4-32`, `v5litepod-16`) -> PEAK_FLOPS keys.
_TPU_NAMES = {"v4": "TPU v4", "v5e": "TPU v5e", "v5litepod": "TPU v5e", "v5p": "TPU v5p",
              "v6e": "TPU v6e"}


def peak_flops_per_device(device_kind: str) -> float | None:
  """Peak FLOP/s for a `jax.Device.device_kind` or a name such as `v5e`, `v4-32`, `H100`;
  measured for CPU; None if unknown."""
  if device_kind.lower() == "cpu":
    return measured_cpu_flops()
  tpu = _TPU_NAMES.get(device_kind.lower().split("-")[0])
  if tpu:
    return PEAK_FLOPS[tpu]
  for key in sorted(PEAK_FLOPS, key=len, reverse=True):
    if key.lower() in device_kind.lower():
      return PEAK_FLOPS[key]
  return None


@functools.cache
def measured_cpu_flops(n: int = 1024, repeats: int = 5) -> float:
  """Best float32 matmul FLOP/s of this CPU (all cores), measured once per process."""
  import jax
  import jax.numpy as jnp
  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n), np.float32))
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2.0 * n ** 3 / best
