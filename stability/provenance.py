"""What software and data a run trained with, recorded in its summary.

A run's numbers depend on more than its config: another JAX version rounds differently, XLA_FLAGS
and compiler options change the compiled program, and the embedded corpus is extracted from the
running Python, so another Python trains on other text. `record` names all of these. A run's
summary holds a list of them (`provenance`): one, or one more for each resume under other
software or data, from the step it resumed at.
"""

import functools
import importlib.metadata
import os
import pathlib
import platform
import subprocess

from stability import data as data_lib
from stability import result_format as fmt

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")
TRAINING_CODE = ("stability", "configs")  # what a run's numbers depend on
# Entries that records written before they existed lack, and the value they then had.
ADDED_LATER = {"compiler_options": {}, "numerics": fmt.NUMERICS_BEFORE}


def _version(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


@functools.lru_cache(maxsize=1)
def code_version() -> str | None:
  """The last git commit that changed the training code (stability/, configs/), `-dirty` when
  it has uncommitted changes; None outside a git checkout of the project."""
  root = pathlib.Path(__file__).resolve().parents[1]
  env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # never take the index lock
  def git(*args):
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=5, check=True, env=env).stdout.strip()
  try:
    if pathlib.Path(git("rev-parse", "--show-toplevel")).resolve() != root:
      return None
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", *TRAINING_CODE)
    return git("log", "-1", "--format=%H", "--", *TRAINING_CODE) + ("-dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return None


def software() -> dict:
  """The code version, Python and package versions of this process, and its XLA_FLAGS."""
  return {"code": code_version(), "python": platform.python_version(),
          **{p: _version(p) for p in PACKAGES}, "xla_flags": os.environ.get("XLA_FLAGS", "")}


def record(data_source, compiler_options: dict) -> dict:
  """`software()`, the programs' XLA `compiler_options` (`stability.compiler_options`), the CPUs
  this process may use (on a CPU a run's rounding depends on its thread count), and the text the
  data source (a `stability.data.Source` or its config) reads where its config alone does not
  say (the embedded corpus)."""
  out = {**software(), "compiler_options": dict(compiler_options), "numerics": fmt.NUMERICS,
         "cpus": len(os.sched_getaffinity(0))}
  corpus = data_lib.source_for(data_source).fingerprint()
  if corpus is not None:
    out["corpus"] = corpus
  return out


def differences(before: dict, after: dict) -> list[str]:
  """`"jax 0.10.2 -> 0.12.0"` for each entry that differs. An entry a record lacks (written by an
  older version of this module) has its `ADDED_LATER` value, else is unknown, not changed."""
  before, after = {**ADDED_LATER, **before}, {**ADDED_LATER, **after}
  keys = sorted((set(before) & set(after)) - {"from_step"})
  return [f"{k} {before[k]} -> {after[k]}" for k in keys if before[k] != after[k]]


def continued(history: list[dict], start: int, current: dict) -> list[dict]:
  """The provenance of a run resumed at `start` with `current`: `history` when its last record
  is the same, else `history` and a record from `start` on."""
  if history and not differences(history[-1], current):
    return history
  return [*history, {"from_step": start, **current}]
