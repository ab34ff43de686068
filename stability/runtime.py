"""Process-wide settings that entry points (main, sweep, demo, reproduce, bench) switch on."""

import os

import jax

from stability import compiler_options
from stability import host_memory
from stability import sharding
from stability import watchdog


def enable_compilation_cache() -> None:
  """JAX's persistent compilation cache: a grid compiles each architecture once, ever.

  Location: JAX's own setting if made (JAX_COMPILATION_CACHE_DIR), else $STABILITY_JAX_CACHE,
  else ~/.cache/stability/jax ('' disables it). Off for a CPU job of several processes: with
  jax 0.12.1 such a job hangs in its first step when it loads its programs from the cache
  (docs/scaling.md, "jax 0.12.1 and the compilation cache"); compiling them again costs seconds.
  """
  if jax.config.jax_compilation_cache_dir:
    return
  sharding.maybe_initialize_distributed()
  if jax.process_count() > 1 and jax.default_backend() == "cpu":
    return
  path = os.environ.get("STABILITY_JAX_CACHE",
                        os.path.join(os.path.expanduser("~"), ".cache", "stability", "jax"))
  if path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def keep_freed_host_memory() -> bool:
  """On the CPU backend, `host_memory.keep_freed_memory()`; returns whether it applied. Not on
  accelerators, whose buffers are not host memory. Asking for the backend starts JAX, so a
  multi-host job's `jax.distributed` is started first."""
  sharding.maybe_initialize_distributed()
  return jax.default_backend() == "cpu" and host_memory.keep_freed_memory()


def prepare_training_process() -> None:
  """What every entry point that trains sets: the compilation cache and kept host memory (and a
  bad $STABILITY_CPU_YNN_FUSIONS or watchdog limit stops it here, before any run)."""
  compiler_options.choice()
  watchdog.Limits.from_env(processes=2)
  enable_compilation_cache()
  keep_freed_host_memory()
