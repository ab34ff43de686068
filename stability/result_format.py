"""The result folder of one run: file names, statuses and how to read them (no JAX).

  config.json     the resolved config          metrics.jsonl   one row per logged step
  summary.json    status, ℓ0, final loss, ...  eval.jsonl      one row per eval

Training writes it (`stability.run_files`); `analysis/`, `launch/` and the tests read it through
this module. docs/paper_notes.md#result-format describes every field.
"""

import json
import pathlib
from typing import Any

CONFIG = "config.json"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
EVAL = "eval.jsonl"
RUN_FILES = (CONFIG, SUMMARY, METRICS, EVAL)

# interrupted: ended by the watchdog (a stall, or a SIGTERM that reached no step boundary in time).
STATUSES = ("running", "done", "diverged", "preempted", "interrupted", "failed")
# A rerun of these returns the summary and trains nothing; their final loss is meaningful.
FINISHED = ("done", "diverged")

# The train step's rounding, recorded in each provenance record of a summary: a new label whenever
# an intended change to the step (not to the software) makes the same config train to other
# digits. Runs with another label are compared with this code's by verdict, not digit for digit.
NUMERICS = "2026-12-07: row-major projections, written-out attention backward"
NUMERICS_BEFORE = "before 2026-12-07"  # what a record without the entry was trained by


def other_numerics(summaries) -> list[str]:
  """The step roundings these summaries name, sorted, when any is not this code's; else []."""
  labels = {numerics(s) for s in summaries}
  return sorted(labels) if labels - {NUMERICS} else []


def numerics(summary: dict) -> str:
  """The step rounding that a summary's last provenance record names (NUMERICS_BEFORE when it
  names none, or the record is unreadable)."""
  records = summary.get("provenance")
  last = records[-1] if isinstance(records, list) and records else {}
  return last.get("numerics", NUMERICS_BEFORE) if isinstance(last, dict) else NUMERICS_BEFORE


def config_json(config) -> dict:
  """An ml_collections config as config.json holds it (tuples become lists)."""
  return json.loads(json.dumps(config.to_dict()))


def _path(path) -> Any:
  """`path` as given when it is a path object (pathlib, etils.epath, ...), else a pathlib.Path."""
  return path if hasattr(path, "read_text") else pathlib.Path(path)


def read_json(path) -> dict | None:
  """The JSON object in `path`; None when the file is absent. Raises ValueError when it is corrupt
  or not an object."""
  path = _path(path)
  if not path.exists():
    return None
  value = json.loads(path.read_text())
  if not isinstance(value, dict):
    raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
  return value


def read_jsonl(path, bad_lines: list[int] | None = None) -> list[dict]:
  """The JSON objects of a JSON-lines file ([] when absent). A torn or corrupt line (a killed
  writer) is skipped; its 1-based number is appended to `bad_lines` when given."""
  path = _path(path)
  if not path.exists():
    return []
  rows = []
  for number, line in enumerate(path.read_text().splitlines(), start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except ValueError:
      row = None
    if isinstance(row, dict):
      rows.append(row)
    elif bad_lines is not None:
      bad_lines.append(number)
  return rows


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
  """`{"model": {"d_model": 256}}` -> `{"model.d_model": 256}`; lists become JSON strings."""
  flat = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      flat.update(flatten(value, f"{name}."))
    elif isinstance(value, (list, tuple)):
      flat[name] = json.dumps(value)
    else:
      flat[name] = value
  return flat
