"""One grid trained by several sweep runners at once, each pinned to its own CPU cores.

On a CPU, small models leave cores idle: XLA splits each small op across every core and waits
between ops. Runners on disjoint cores train different points side by side (docs/performance.md:
two one-core runners finish the cpu-scale Fig 1 points 1.18-1.23× sooner than one runner on two
cores). The runners share the sweep folder, and its point locks keep them off each other's points.
Each begins on its own compiled programs (`launch.sweep.walk_order`), so that a program is
compiled once, and each stops when its parent does, however the parent ends.

Rounding depends on how many threads a run has. `--workers=auto` (the default of `make demo` and
`make reproduce`, and how reference/cpu/ was made) gives each run exactly one core, so a run
rounds the same on a machine of any core count; runs made with fewer runners than cores do not.
"""

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import Callable

PR_SET_PDEATHSIG = 1  # prctl(2): the signal this process gets when its parent dies


def cpu_sets(workers: int, cpus: list[int] | None = None) -> list[list[int]]:
  """`workers` disjoint, contiguous, near-equal slices of the CPUs this process may use."""
  cpus = sorted(os.sched_getaffinity(0) if cpus is None else cpus)
  if not 1 <= workers <= len(cpus):
    raise ValueError(f"--workers={workers}: this process may use {len(cpus)} CPUs, so 1 to "
                     f"{len(cpus)} workers")
  size, extra = divmod(len(cpus), workers)
  starts = [i * size + min(i, extra) for i in range(workers + 1)]
  return [cpus[starts[i]:starts[i + 1]] for i in range(workers)]


def count(requested: str | int, batch: str = "auto") -> int:
  """Runners for a `--workers` value: a number as given; "auto" is one per CPU this process may
  use when JAX computes on the CPU and runs are not batched (each run on one core), else 1."""
  if str(requested) != "auto":
    try:
      return int(requested)
    except ValueError:
      raise ValueError(f"--workers={requested}: give a number of runners or auto") from None
  import jax  # only here: the launchers parse their flags without starting a backend
  if batch == "on" or jax.default_backend() != "cpu":
    return 1
  return len(os.sched_getaffinity(0))


def resolve(requested: str | int, batch: str = "auto") -> int:
  """`count(requested, batch)`, checked by `check_flags` (ValueError before anything trains)."""
  workers = count(requested, batch)
  check_flags(workers, batch)
  return workers


def check_flags(workers: int, batch: str) -> None:
  """Raises ValueError for a `--workers` these CPUs cannot hold, or one paired with `--batch=on`
  (a vmapped group is one program in one process; runners train one run at a time)."""
  cpu_sets(workers)
  if workers > 1 and batch == "on":
    raise ValueError(f"--workers={workers} trains one run per runner; --batch=on needs --workers=1")


def stop_with_parent(parent_pid: int) -> None:
  """Asks Linux for a SIGTERM to this process when `parent_pid`, its parent, dies: a parent
  killed with SIGKILL cannot pass its stop on, and a runner then checkpoints and stops as on any
  SIGTERM. Nothing elsewhere than on Linux."""
  if not sys.platform.startswith("linux"):
    return
  ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
  if os.getppid() != parent_pid:  # it died before the request
    os.kill(os.getpid(), signal.SIGTERM)


def pinned_module(cpus: list[int], module: str, args: list[str]) -> list[str]:
  """A command that runs `python -m module args` on `cpus` only, stopped with its parent
  (`stop_with_parent`). The process pins itself before the module runs (no fork-time hook: the
  caller may be a multithreaded JAX process)."""
  start = (f"import os, runpy, sys; os.sched_setaffinity(0, {sorted(cpus)}); "
           f"from launch.workers import stop_with_parent; stop_with_parent({os.getpid()}); "
           f"sys.argv[0] = {module!r}; runpy.run_module({module!r}, run_name='__main__', "
           "alter_sys=True)")
  return [sys.executable, "-c", start, *args]


def sweep_command(cpus: list[int], experiment: str, out: str, only: str = "",
                  sets: tuple[str, ...] = (), runner: str = "0/1") -> list[str]:
  """The one-runner sweep each worker runs on `cpus` (never batched: one run per core set), as
  runner k of n (`runner`, "k/n": where it begins its walk of the grid)."""
  return pinned_module(cpus, "launch.sweep", [
      f"--experiment={experiment}", f"--out={out}", f"--only={only}", "--batch=off",
      "--workers=1", f"--runner={runner}", *(f"--set={s}" for s in sets)])


def run(experiment: str, out: str, workers: int, only: str = "", sets: tuple[str, ...] = (),
        should_stop: Callable[[], bool] = lambda: False, poll_s: float = 0.5) -> list[int]:
  """Trains the grid of `experiment` into `out` with `workers` pinned runners; returns their
  exit codes. When `should_stop()` turns true, each runner gets SIGTERM: it checkpoints its run
  and stops, and the same call later resumes."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen(sweep_command(cpus, experiment, out, only, sets, f"{k}/{workers}"),
                            env=env)
           for k, cpus in enumerate(cpu_sets(workers))]
  stopping = False
  try:
    while any(p.poll() is None for p in procs):
      if should_stop() and not stopping:
        stopping = True
        for p in procs:
          if p.poll() is None:
            p.send_signal(signal.SIGTERM)
      time.sleep(poll_s)
  finally:
    for p in procs:  # an exception here (Ctrl-C) must not leave runners training
      if p.poll() is None:
        p.terminate()
        p.wait()
  return [p.returncode for p in procs]
