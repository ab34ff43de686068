"""One cpu-scale matmul, [2048, 128] x [128, 512] (d128 tokens by the MLP's first kernel), and its
two backward forms, timed three ways on XLA:CPU (ms, median of 300 calls after 1 s of warm-up):

  float32          float32 operands, float32 result
  bf16             bfloat16 operands and result (XLA: convert, float32 dot, convert)
  bf16 -> f32      bfloat16 operands, float32 result (preferred_element_type), then rounded to
                   bfloat16: the same numbers, up to the order of the sum

each compiled with XLA's default YNNPACK fusions and with them off (what the training programs
use at vocabularies below 2048, stability/compiler_options.py).

  python docs/measured/bf16-dots-2026-12-08/dots.py
"""
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ROWS, IN, OUT = 2048, 128, 512
FORMS = {  # name: (dimension numbers, lhs shape, rhs shape)
    "y = x w": ((((1,), (0,)), ((), ())), (ROWS, IN), (IN, OUT)),
    "dx = dy w^T": ((((1,), (1,)), ((), ())), (ROWS, OUT), (IN, OUT)),
    "dw = x^T dy": ((((0,), (0,)), ((), ())), (ROWS, IN), (ROWS, OUT)),
}


def median_ms(fn, *args, n=300):
  jax.block_until_ready(fn(*args))
  start = time.perf_counter()
  while time.perf_counter() - start < 1.0:
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(n):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times) * 1e3


def main():
  rng = np.random.default_rng(0)
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
  print("| YNNPACK fusions | form | float32 | bf16 | bf16 -> f32 |")
  print("|---|---|---|---|---|")
  for label, options in (("XLA default", {}), ("off", {"xla_cpu_experimental_ynn_fusion_type": ""})):
    for form, (dims, lhs_shape, rhs_shape) in FORMS.items():
      a = jnp.asarray(rng.standard_normal(lhs_shape), jnp.float32)
      b = jnp.asarray(rng.standard_normal(rhs_shape), jnp.float32)
      plain = jax.jit(lambda x, y, d=dims: lax.dot_general(x, y, d), compiler_options=options)
      native = jax.jit(lambda x, y, d=dims: lax.dot_general(
          x, y, d, preferred_element_type=jnp.float32).astype(x.dtype), compiler_options=options)
      half = (a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))
      row = [median_ms(plain, a, b), median_ms(plain, *half), median_ms(native, *half)]
      print(f"| {label} | {form} | " + " | ".join(f"{ms:.2f}" for ms in row) + " |")


if __name__ == "__main__":
  main()
