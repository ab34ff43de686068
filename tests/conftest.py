"""Test-session settings: one JAX compilation cache shared by every test and subprocess."""

import os

from stability import runtime


def pytest_configure(config):
  """Most tests train tiny models of a few shapes: compiling each program once saves minutes."""
  path = os.environ.setdefault(
      "STABILITY_JAX_CACHE", os.path.join(str(config.rootpath), ".pytest_cache", "jax-cache"))
  runtime.enable_compilation_cache(path)
