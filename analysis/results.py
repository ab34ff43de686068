"""Reads result folders (docs/paper_notes.md#result-format) into pandas tables.

Of `stability` it imports only what needs no JAX (the result format, size names, parameter
counts): a folder of runs, local or on GCS, is all it needs.

  runs = load_runs("results/fig1_qk_layernorm")   # one row per run
  runs.attrs["problems"]                           # what could not be read, in words
  m = load_metrics(runs.run_dir[0])                # one row per logged step

Broken files never raise: a corrupt `summary.json` or a truncated `metrics.jsonl` line becomes
a problem entry (and a warning) and the rest of the sweep is still read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd

from stability import flops
from stability import result_format as fmt
from stability import sizes

try:
  from etils import epath as _epath
except ImportError:  # pragma: no cover - etils is a dependency, but analysis must not need it
  _epath = None

PathLike = str | os.PathLike
RUN_FILES = fmt.RUN_FILES
FINISHED = fmt.FINISHED  # statuses whose final eval loss is meaningful for LR sensitivity
# Summary fields copied into the runs table (besides those read separately).
SUMMARY_FIELDS = ("steps", "tokens", "wall_s", "tokens_per_s", "mfu")
# Config keys shown in figure footnotes when they are constant across the runs drawn.
KEY_CONFIG = (
    "train.steps", "opt.warmup_steps", "opt.weight_decay", "opt.weight_decay_mode", "loss.z_loss",
    "opt.eps", "model.qk_layernorm", "model.parametrization", "data.source", "data.batch_size",
    "model.seq_len")

# What the last session of a run trained with (`provenance` in its summary; None when unrecorded).
PROVENANCE_COLUMNS = ("code", "python", "jax", "xla_flags", "compiler_options", "corpus_sha256")
NUMERIC_COLUMNS = ("d_model", "num_layers", "num_params", "lr", "init_eval_loss",
                   "final_eval_loss", "diverged_at_step", *SUMMARY_FIELDS)
BASE_COLUMNS = ("name", "arm", "size", "d_model", "num_layers", "num_params", "lr", "seed", "status",
                "init_eval_loss", "final_eval_loss", "diverged_at_step", *SUMMARY_FIELDS,
                *PROVENANCE_COLUMNS, "software_changed", "run_dir")

_LR_TOKEN = re.compile(r"^lr[-+.0-9eE]+$")


def as_path(path: PathLike) -> Any:
  """An `etils.epath.Path` (local, GCS, ...) when etils is installed, else a `pathlib.Path`."""
  if _epath is not None:
    return _epath.Path(path)
  return pathlib.Path(path)


class ProblemWarning(UserWarning):
  """A run or file that analysis could not use as is (it goes on with the rest)."""


@dataclasses.dataclass
class Problems:
  """Collects what could not be read; each entry is also issued as a warning."""
  items: list[str] = dataclasses.field(default_factory=list)

  def add(self, message: str) -> None:
    self.items.append(message)
    warnings.warn(message, ProblemWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# Files


def read_json(path: PathLike, problems: Problems | None = None) -> dict | None:
  """A JSON object from `path`, or None (with a problem) if it is absent or corrupt."""
  path = as_path(path)
  try:
    return fmt.read_json(path)
  except (ValueError, OSError, UnicodeDecodeError) as e:
    if problems is not None:
      problems.add(f"{path}: unreadable JSON ({e}); ignored")
    return None


def read_jsonl(path: PathLike, problems: Problems | None = None) -> list[dict]:
  """The rows (objects with a "step") of a JSON-lines file; corrupt or truncated lines are
  skipped and reported."""
  path = as_path(path)
  bad: list[int] = []
  objects = fmt.read_jsonl(path, bad)
  rows = [row for row in objects if "step" in row]
  skipped = len(bad) + len(objects) - len(rows)
  if skipped:
    where = f" (line {', '.join(map(str, bad[:5]))}{', ...' if len(bad) > 5 else ''})" if bad else ""
    (problems or Problems()).add(f"{path}: skipped {skipped} corrupt line(s){where}")
  return rows


def _steps_frame(rows: list[dict], columns: Iterable[str] | None) -> pd.DataFrame:
  """Rows keyed by `step` -> a frame sorted by step; a re-logged step keeps its last value."""
  if columns is not None:
    keep = ["step", *columns]
    rows = [{k: row[k] for k in keep if k in row} for row in rows]
  frame = pd.DataFrame(rows)
  if frame.empty:
    return pd.DataFrame(columns=["step", *(columns or ())])
  frame["step"] = pd.to_numeric(frame["step"], errors="coerce")
  frame = frame.dropna(subset=["step"]).astype({"step": int})
  frame = frame.drop_duplicates("step", keep="last").sort_values("step")
  for column in frame.columns:
    if column != "step":
      frame[column] = pd.to_numeric(frame[column], errors="coerce")
  return frame.reset_index(drop=True)


def load_metrics(run_dir: PathLike, columns: Iterable[str] | None = None,
                 problems: Problems | None = None) -> pd.DataFrame:
  """`metrics.jsonl` of one run: one row per logged step, sorted; NaN/Infinity kept as floats.

  A resumed run may log a step twice; the last line wins. `columns` keeps only those keys.
  """
  return _steps_frame(read_jsonl(as_path(run_dir) / "metrics.jsonl", problems), columns)


def load_eval(run_dir: PathLike, problems: Problems | None = None) -> pd.DataFrame:
  """`eval.jsonl` of one run: columns `step`, `eval_loss`; step 0 is the loss at initialization."""
  return _steps_frame(read_jsonl(as_path(run_dir) / "eval.jsonl", problems), ["eval_loss"])


# ---------------------------------------------------------------------------------------------
# Per-run metric summaries (Fig 9, Fig 11)


def final_mean(metrics: pd.DataFrame, metric: str, last_steps: int = 500) -> float:
  """Mean of `metric` over the logged steps in the final `last_steps` training steps.

  The window is (last logged step − last_steps, last logged step], in steps, not in log lines
  (Fig 11: "averaged over the final 500 steps"). NaN if the metric is absent; a non-finite value
  inside the window (a diverged run) makes the mean non-finite, which figures then drop.
  """
  if metric not in metrics.columns or metrics.empty:
    return math.nan
  last = metrics["step"].max()
  window = metrics.loc[metrics["step"] > last - last_steps, metric]
  return float(window.mean(skipna=False)) if len(window) else math.nan


def value_at_step(metrics: pd.DataFrame, metric: str, step: int,
                  max_gap: int | None = None) -> tuple[float, int | None]:
  """(`metric` at the last logged step ≤ `step`, that step); (NaN, None) if there is none.

  `max_gap` rejects a logged step more than that many steps before `step` (e.g. a run that
  stopped early); by default any earlier step is accepted.
  """
  if metric not in metrics.columns:
    return math.nan, None
  logged = metrics.loc[(metrics["step"] <= step) & metrics[metric].notna(), ["step", metric]]
  if logged.empty:
    return math.nan, None
  row = logged.iloc[-1]
  if max_gap is not None and step - row["step"] > max_gap:
    return math.nan, None
  return float(row[metric]), int(row["step"])


def with_metric(runs: pd.DataFrame, metric: str, *, last_steps: int | None = 500,
                at_step: int | None = None, column: str | None = None) -> pd.DataFrame:
  """`runs` plus a column of `metric` per run: its final-window mean, or its value `at_step`.

  With `at_step` the column `<column>_step` holds the logged step actually used. Corrupt lines
  are skipped and added to `attrs["problems"]`.
  """
  column = column or metric
  values, steps = [], []
  problems = Problems()
  for run_dir in runs["run_dir"]:
    metrics = load_metrics(run_dir, columns=[metric], problems=problems)
    if at_step is not None:
      value, used = value_at_step(metrics, metric, at_step)
      steps.append(used)
    else:
      value = final_mean(metrics, metric, last_steps or 500)
    values.append(value)
  out = runs.copy()
  out[column] = values
  if at_step is not None:
    out[f"{column}_step"] = steps
  out.attrs["problems"] = [*runs.attrs.get("problems", []), *problems.items]
  return out


# ---------------------------------------------------------------------------------------------
# Runs table



def no_runs_error(tool: str, sweep_dir: PathLike) -> str | None:
  """The one-line error of `tool` when `sweep_dir` holds no run, else None (read quietly)."""
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", ProblemWarning)
    if not load_runs(sweep_dir).empty:
      return None
  return (f"{tool}: error: no runs in {str(sweep_dir)!r} (a sweep folder holds one folder per "
          "run, each with config.json)")


def parse_size(size: str | None) -> tuple[int | None, int | None]:
  """`"d256-L3"` -> (256, 3); (None, None) for anything that is not a size name."""
  try:
    d_model, num_layers, _ = sizes.parse(size or "")
  except ValueError:
    return None, None
  return d_model, num_layers


def arm_from_name(name: str, size: str | None) -> str:
  """The arm label of a run name such as `d256-L3_lr1e-02_qkln-off` -> `qkln-off`.

  Used only when `sweep.json` does not name the arm: the size and `lr...` parts are dropped.
  """
  parts = [p for p in re.split(r"[_/]", name) if p and p != size and not _LR_TOKEN.match(p)]
  return "_".join(parts) or "default"


def _is_run_dir(path: PathLike) -> bool:
  path = as_path(path)
  return path.is_dir() and any((path / f).exists() for f in RUN_FILES)


def _sweep_points(spec: dict | None) -> dict[str, dict]:
  if not spec:
    return {}
  return {p["name"]: p for p in spec.get("points", []) if isinstance(p, dict) and "name" in p}


def _number(value: Any) -> float:
  """A float from a JSON value; None, strings and the like become NaN."""
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def _non_embedding_estimate(config: dict) -> float:
  """12·L·d² (4d² attention + 2·mlp_ratio·d² MLP per layer), when the summary lacks it."""
  d, layers = config.get("model.d_model"), config.get("model.num_layers")
  if d is None or layers is None:
    return math.nan
  return float(flops.non_embedding_params(d, layers, config.get("model.mlp_ratio", 4)))


def _fill_losses_from_eval(row: dict, summary: dict, run_dir: PathLike,
                           problems: Problems) -> None:
  """Fills init/final eval loss from `eval.jsonl` when the summary does not give them.

  ℓ0 is the eval at step 0. The final loss is taken from the last eval only for a run whose
  status is `done`: a diverged run's last finite eval predates the divergence.
  """
  need_init = summary.get("init_eval_loss") is None
  need_final = row["status"] == "done" and summary.get("final_eval_loss") is None
  if not (need_init or need_final):
    return
  evals = load_eval(run_dir, problems)
  if evals.empty:
    return
  if need_init and evals["step"].iloc[0] == 0:
    row["init_eval_loss"] = float(evals["eval_loss"].iloc[0])
  if need_final:
    row["final_eval_loss"] = float(evals["eval_loss"].iloc[-1])


def _provenance(summary: dict) -> dict:
  """The PROVENANCE_COLUMNS of a summary's last provenance record, and `software_changed`:
  whether a resume changed the software or data (None when unknown: no record, or none for the
  first steps)."""
  history = summary.get("provenance")
  history = [r for r in history if isinstance(r, dict)] if isinstance(history, list) else []
  last = history[-1] if history else {}
  corpus = last.get("corpus") if isinstance(last.get("corpus"), dict) else {}
  changed = None
  if len(history) > 1:
    changed = True
  elif history and history[0].get("from_step") == 0:
    changed = False
  options = last.get("compiler_options")
  return {"code": last.get("code"), "python": last.get("python"), "jax": last.get("jax"),
          "xla_flags": last.get("xla_flags"),
          "compiler_options": json.dumps(options, sort_keys=True) if options is not None else None,
          "corpus_sha256": corpus.get("sha256"), "software_changed": changed}


def _run_row(run_dir: Any, point: dict | None, problems: Problems) -> dict:
  """One row of the runs table from a run folder and its `sweep.json` point (if any)."""
  name = point["name"] if point else run_dir.name
  config = fmt.flatten(read_json(run_dir / "config.json", problems) or {})
  summary = read_json(run_dir / "summary.json", problems)
  if summary is None:
    problems.add(f"run {name}: no readable summary.json; status unknown")
    summary = {}
  point = point or {}
  size = point.get("size") or config.get("model.size")
  d_model, num_layers = config.get("model.d_model"), config.get("model.num_layers")
  if d_model is None or num_layers is None:
    d_model, num_layers = parse_size(size)
  size = size or (f"d{d_model}-L{num_layers}" if d_model else None)
  row = {
      "name": name,
      "arm": point.get("arm") or config.get("arm") or arm_from_name(name, size),
      "size": size,
      "d_model": d_model,
      "num_layers": num_layers,
      "num_params": _number(summary.get("num_params")),
      "lr": _number(point.get("lr", config.get("opt.peak_lr"))),
      "seed": int(config.get("train.seed") or 0),
      "status": str(summary.get("status", "unknown")),
      "init_eval_loss": _number(summary.get("init_eval_loss")),
      "final_eval_loss": _number(summary.get("final_eval_loss")),
      "diverged_at_step": summary.get("diverged_at_step"),
      **{key: _number(summary.get(key)) for key in SUMMARY_FIELDS},
      **_provenance(summary),
      "run_dir": str(run_dir),
  }
  if math.isnan(row["num_params"]):
    row["num_params"] = _non_embedding_estimate(config)
    if summary:
      problems.add(f"run {name}: summary has no num_params; using 12·L·d²")
  _fill_losses_from_eval(row, summary, run_dir, problems)
  return {**row, **{k: v for k, v in config.items() if k not in row}}


def _single_run_dir(root: Any) -> bool:
  return any((root / f).exists() for f in RUN_FILES)


def load_runs(path: PathLike) -> pd.DataFrame:
  """One row per run of a sweep folder (or of a single run folder).

  Columns: name, arm, size, d_model, num_layers, num_params, lr, status, init_eval_loss,
  final_eval_loss, diverged_at_step, steps, tokens, wall_s, tokens_per_s, mfu, the software and
  corpus of its last session (code, python, jax, xla_flags, compiler_options as JSON,
  corpus_sha256; None where unrecorded) and software_changed, run_dir, then the flattened config
  (`model.qk_layernorm`, `opt.peak_lr`, ...). arm/size/lr come from `sweep.json` when it lists
  the run, else from the config and the run name. `status` is `unknown` when the
  summary is absent or unreadable. `attrs["problems"]` lists what could not be read and
  `attrs["sweep"]` holds `sweep.json` (or {}).
  """
  root = as_path(path)
  problems = Problems()
  spec = read_json(root / "sweep.json", problems) or {}
  points = _sweep_points(spec)
  if _single_run_dir(root) and not points:
    rows = [_run_row(root, None, problems)]
  else:
    rows = _sweep_rows(root, points, problems)
  if not rows:
    problems.add(f"{root}: no runs found")
  runs = pd.DataFrame(rows, columns=None if rows else list(BASE_COLUMNS))
  for column in NUMERIC_COLUMNS:
    runs[column] = pd.to_numeric(runs[column], errors="coerce").astype(float)
  runs = runs.sort_values(["arm", "num_params", "lr"], na_position="last").reset_index(drop=True)
  runs.attrs["problems"] = problems.items
  runs.attrs["sweep"] = spec
  return runs


def _sweep_rows(root: Any, points: dict[str, dict], problems: Problems) -> list[dict]:
  """Rows for the listed points (in order), then for any other run folder under `root`."""
  rows, seen = [], set()
  for name, point in points.items():
    run_dir = root / name
    seen.add(name)
    if not _is_run_dir(run_dir):
      problems.add(f"run {name}: listed in sweep.json but has no results yet")
      continue
    rows.append(_run_row(run_dir, point, problems))
  if root.exists():
    for run_dir in sorted(root.iterdir(), key=lambda p: p.name):
      if run_dir.name not in seen and _is_run_dir(run_dir):
        rows.append(_run_row(run_dir, None, problems))
  return rows


def key_config(runs: pd.DataFrame) -> dict[str, Any]:
  """The `KEY_CONFIG` entries that have one value across `runs` (for figure footnotes)."""
  out = {}
  for key in KEY_CONFIG:
    if key in runs.columns:
      values = runs[key].dropna().unique()
      if len(values) == 1:
        out[key.split(".", 1)[1]] = values[0]
  return out


def describe(runs: pd.DataFrame) -> str:
  """`"fig1_qk_layernorm (gpu) · steps=1000 · warmup_steps=100 · ..."` for a footnote."""
  spec = runs.attrs.get("sweep") or {}
  head = spec.get("experiment", "")
  if spec.get("scale"):
    head += f" ({spec['scale']})"
  items = [f"{k}={_short(v)}" for k, v in key_config(runs).items()]
  return " · ".join([head, *items] if head else items)


def _short(value: Any) -> str:
  if isinstance(value, (float, np.floating)) and value != 0 and not float(value).is_integer():
    return f"{value:.3g}"
  return str(value)
