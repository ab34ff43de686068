"""The cpu-scale train step of one size, built once per variant in one process and timed in
alternating rounds, so that a machine whose speed drifts over minutes is compared with itself.
A variant is a set of environment variables (VAR=value, joined by '+'; '-' for none) in force
while its step is traced and compiled: with native_dots.patch applied, PROTOTYPE_NATIVE_DOTS=0
and PROTOTYPE_YNN_FUSION_TYPE=<XLA enum name or empty> choose the prototype's dots and XLA's
YNNPACK fusions.

  python docs/measured/bf16-dots-2026-12-08/ab.py d128-L2 bfloat16 '<variant>,<variant>,...' [rounds]
"""
import os
import statistics
import sys
import time

import jax
import numpy as np

from stability import config_schema, run as run_lib, sizes, step_memory

VOCAB, BATCH, SEQ_LEN = 259, 16, 128


def config(size, dtype):
  c = config_schema.default_config()
  sizes.apply(c.model, size)
  c.data.source, c.data.batch_size, c.data.synthetic.vocab_size = "synthetic", BATCH, VOCAB
  c.model.seq_len, c.model.dtype = SEQ_LEN, dtype
  c.opt.peak_lr, c.opt.warmup_steps, c.train.steps = 1e-3, 10, 1000
  c.train.grad_accum = step_memory.microbatches_for_cache(c.model, BATCH, VOCAB)
  return c


def environment(variant):
  return dict(kv.split("=", 1) for kv in variant.split("+") if kv != "-")


def compiled_step(size, dtype, variant, tokens):
  """A step closure with its own state, traced and compiled under `variant`'s environment."""
  saved = dict(os.environ)
  os.environ.update(environment(variant))
  try:
    run = run_lib.Run([config(size, dtype)], VOCAB)
    holder = {"state": run.init_state(0)}
    batch = run.global_batch(tokens)

    def step():
      holder["state"], metrics = run.train_step(holder["state"], batch, diagnose=False)
      jax.block_until_ready(metrics["train_loss"])

    step()
    return step
  finally:
    os.environ.clear()
    os.environ.update(saved)


def main():
  size, dtype, variants = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
  rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 8
  tokens = np.random.default_rng(0).integers(0, VOCAB, (BATCH, SEQ_LEN + 1)).astype(np.int32)
  steps = {v: compiled_step(size, dtype, v, tokens) for v in variants}
  medians = {v: [] for v in variants}
  for _ in range(rounds):
    for variant, step in steps.items():
      start = time.perf_counter()
      while time.perf_counter() - start < 0.5:
        step()
      times = []
      for _ in range(15):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
      medians[variant].append(statistics.median(times) * 1e3)
  for variant, ms in medians.items():
    print(f"{size} {dtype} {variant}: {statistics.median(ms):.1f} ms per step "
          f"(rounds: {', '.join(f'{m:.1f}' for m in ms)})")


if __name__ == "__main__":
  main()
