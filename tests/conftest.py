"""Test-session settings: one JAX compilation cache shared by every test and subprocess, and
full-precision float32 matmuls."""

import os

import jax


def pytest_configure(config):
  """Most tests train tiny models of a few shapes: compiling each program once saves minutes.
  The cache keeps every program (tiny ones compile in well under the entry points' 0.5 s
  threshold), and the JAX_* variables hand the same cache to every subprocess."""
  path = os.environ.setdefault(
      "STABILITY_JAX_CACHE", os.path.join(str(config.rootpath), ".pytest_cache", "jax-cache"))
  settings = {"jax_compilation_cache_dir": path, "jax_persistent_cache_min_compile_time_secs": 0,
              "jax_persistent_cache_min_entry_size_bytes": 0,
              # The references are float32 and float64. On a GPU, JAX's default lets float32
              # matmuls run as TF32 (a 10-bit mantissa): tests ask for full float32.
              "jax_default_matmul_precision": "highest"}
  for name, value in settings.items():
    os.environ[name.upper()] = str(value)
    jax.config.update(name, value)
