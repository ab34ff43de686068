"""Step timing shared by the JAX benchmark and its PyTorch reference."""

import statistics
import time


def time_steps(step_fn, n: int, warmup: int = 2) -> tuple[float, float]:
  """(seconds of the first call, median seconds of `n` calls after `warmup` more). Each call
  must return only once its work is done (block on the result inside `step_fn`)."""
  t = time.perf_counter()
  step_fn()
  first = time.perf_counter() - t
  for _ in range(warmup):
    step_fn()
  times = []
  for _ in range(n):
    t = time.perf_counter()
    step_fn()
    times.append(time.perf_counter() - t)
  return first, statistics.median(times)
