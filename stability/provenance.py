"""What software and data a run trained with, recorded in its summary.

A run's numbers depend on more than its config: another JAX version rounds differently, XLA_FLAGS
and compiler options change the compiled program, and the embedded corpus is extracted from the
running Python, so another Python trains on other text. `record` names all of these. A run's
summary holds a list of them (`provenance`): one, or one more for each resume under other
software or data, from the step it resumed at.
"""

import importlib.metadata
import os
import platform

from stability import data_common
from stability import embedded_corpus

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def software() -> dict:
  """The Python and package versions of this process, and its XLA_FLAGS."""
  return {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES},
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def record(data_config, compiler_options: dict) -> dict:
  """`software()`, the programs' XLA `compiler_options` (`stability.compiler_options`), and for
  the embedded source the corpus it reads (name, documents, SHA-256)."""
  out = {**software(), "compiler_options": dict(compiler_options)}
  if data_config.source == "embedded":
    cache = data_common.cache_dir(data_config.embedded.cache_dir)
    out["corpus"] = embedded_corpus.fingerprint(cache)
  return out


def differences(before: dict, after: dict) -> list[str]:
  """`"jax 0.10.2 -> 0.12.0"` for each entry that differs (the step keys aside)."""
  keys = sorted((set(before) | set(after)) - {"from_step"})
  return [f"{k} {before.get(k)} -> {after.get(k)}" for k in keys if before.get(k) != after.get(k)]


def continued(history: list[dict], start: int, current: dict) -> list[dict]:
  """The provenance of a run resumed at `start` with `current`: `history` when its last record
  is the same, else `history` and a record from `start` on."""
  if history and not differences(history[-1], current):
    return history
  return [*history, {"from_step": start, **current}]
