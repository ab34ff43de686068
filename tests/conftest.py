"""Test-session settings: one JAX compilation cache shared by every test and subprocess."""

import os

import jax

from stability import runtime


def pytest_configure(config):
  """Most tests train tiny models of a few shapes: compiling each program once saves minutes."""
  path = os.environ.setdefault(
      "STABILITY_JAX_CACHE", os.path.join(str(config.rootpath), ".pytest_cache", "jax-cache"))
  runtime.enable_compilation_cache(path)
  # The references are float32 and float64. On a GPU, JAX's default lets float32 matmuls run as
  # TF32 (a 10-bit mantissa): tests ask for full float32, here and in their subprocesses.
  os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
  jax.config.update("jax_default_matmul_precision", os.environ["JAX_DEFAULT_MATMUL_PRECISION"])
