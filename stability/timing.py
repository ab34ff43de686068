"""Step timing shared by the JAX benchmark and its PyTorch reference."""

import statistics
import time


def time_steps(step_fn, n: int, warmup: int = 2, warmup_s: float = 2.0) -> tuple[float, float]:
  """(seconds of the first call, median seconds of `n` calls after at least `warmup` more calls
  and `warmup_s` seconds of them). Each call must return only once its work is done (block on the
  result inside `step_fn`). The time floor: on a 2-core CPU the first second or two after a
  compile ran up to 2× slower than the steps after (2026-12-07)."""
  t = time.perf_counter()
  step_fn()
  first = time.perf_counter() - t
  calls, start = 0, time.perf_counter()
  while calls < warmup or time.perf_counter() - start < warmup_s:
    step_fn()
    calls += 1
  times = []
  for _ in range(n):
    t = time.perf_counter()
    step_fn()
    times.append(time.perf_counter() - t)
  return first, statistics.median(times)
