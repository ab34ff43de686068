"""Compact copies of finished sweeps, in the result format, for the repository's reference runs.

Per run: `config.json`, `summary.json` and `eval.jsonl` as they are, and `metrics.jsonl` with
at most MAX_ROWS rows (every k-th, the last always kept), the columns that the claims and the
figures read (KEEP), and numbers rounded to 4 significant digits. Plus the sweep's `sweep.json`
and `timing.json` (how long the sweep trained). `analysis` reads the copy as it reads the sweep.
`make reproduce` adds `corpus.json`: the embedded corpus the runs trained on, whose text comes
from the running Python, so that runs made on another Python are told apart (`corpus_note`).

  python -m launch.reference results/reproduce/fig1_qk_layernorm reference/cpu/fig1_qk_layernorm
  python -m launch.reference --totals reference/cpu    # runs, distinct runs, summed wall time
"""

import json
import math
import os
import re
import shutil
import sys
from typing import Iterator

from stability import config_schema
from stability import data as data_lib
from stability import result_format as fmt

MAX_ROWS = 64
KEEP = re.compile(
    r"^(step|train_loss|z_loss|lr|grad_norm|grad_rms|update_rms|param_rms"
    r"|(attn_logit_max|q_norm|k_norm|qk_cos)/block_0|block_out_rms/block_\d+"
    r"|output_logit/(mean|max|log_z_mean)"
    r"|(grad_rms|update_rms)/block_0/mlp/wi/kernel|grad_rms/block_0/attn/wk/kernel)$")
COPIED = (fmt.CONFIG, fmt.SUMMARY, fmt.EVAL)  # as they are; metrics are compacted
CORPUS = "corpus.json"  # in an experiment's folder: the embedded corpus its runs trained on


def _round(x):
  if isinstance(x, float) and math.isfinite(x) and x != 0:
    return float(f"{x:.4g}")
  return x


def compact_rows(rows: list[dict], max_rows: int = MAX_ROWS) -> list[dict]:
  """Every k-th row and the last, only KEEP columns, numbers rounded."""
  if not rows:
    return []
  stride = max(1, math.ceil(len(rows) / max_rows))
  picked = rows[::stride]
  if picked[-1] is not rows[-1]:
    picked.append(rows[-1])
  return [{k: _round(v) for k, v in row.items() if KEEP.match(k)} for row in picked]


def export_run(run_dir: str, target: str) -> None:
  os.makedirs(target, exist_ok=True)
  for name in COPIED:
    if os.path.exists(os.path.join(run_dir, name)):
      shutil.copyfile(os.path.join(run_dir, name), os.path.join(target, name))
  metrics = os.path.join(run_dir, fmt.METRICS)
  if os.path.exists(metrics):
    with open(os.path.join(target, fmt.METRICS), "w") as f:
      for row in compact_rows(fmt.read_jsonl(metrics)):  # a torn last line is skipped
        f.write(json.dumps(row) + "\n")


def _finished_summary(run_dir: str) -> dict | None:
  try:
    summary = fmt.read_json(os.path.join(run_dir, fmt.SUMMARY)) or {}
  except (OSError, ValueError):
    return None
  return summary if summary.get("status") in fmt.FINISHED else None


def export(sweep_dir: str, target: str, names: list[str] | None = None) -> int:
  """Replaces `target` with compact copies of the finished runs of `sweep_dir` (those in
  `names` if given); returns how many. With none finished there, a `target` that holds runs is
  left as it is (`make reproduce --train=false` on an empty `--out` must not empty it).

  `timing.json` holds the runs' summed wall time: what the sweep costs one runner (one runner
  per core shares it among the cores). The corpus record of `target`, if any, is kept
  (`write_corpus` replaces it after training).
  """
  fresh = f"{target.rstrip('/')}.writing"
  shutil.rmtree(fresh, ignore_errors=True)
  os.makedirs(fresh)
  if os.path.exists(os.path.join(target, CORPUS)):
    shutil.copyfile(os.path.join(target, CORPUS), os.path.join(fresh, CORPUS))
  if os.path.exists(os.path.join(sweep_dir, "sweep.json")):
    shutil.copyfile(os.path.join(sweep_dir, "sweep.json"), os.path.join(fresh, "sweep.json"))
  count, seconds = 0, 0.0
  for name in sorted(names if names is not None else os.listdir(sweep_dir)):
    run_dir = os.path.join(sweep_dir, name)
    summary = _finished_summary(run_dir) if os.path.isdir(run_dir) else None
    if summary is not None:
      export_run(run_dir, os.path.join(fresh, name))
      count += 1
      seconds += float(summary.get("wall_s") or 0.0)
  if count == 0 and _holds_runs(target):  # nothing finished in `sweep_dir`: keep what is there
    shutil.rmtree(fresh)
    return 0
  with open(os.path.join(fresh, "timing.json"), "w") as f:
    json.dump({"runs": count, "train_minutes_alone": round(seconds / 60, 1)}, f)
  shutil.rmtree(target, ignore_errors=True)
  os.replace(fresh, target)
  return count


def _holds_runs(folder: str) -> bool:
  return os.path.isdir(folder) and any(
      os.path.exists(os.path.join(folder, name, fmt.CONFIG)) for name in os.listdir(folder))


def write_corpus(target: str) -> None:
  """Records this Python's embedded corpus in `target`, a folder of runs just trained here."""
  record = data_lib.embedded_corpus_record()
  with open(os.path.join(target, CORPUS), "w") as f:
    json.dump(record, f, indent=1)


def corpus_note(target: str) -> str | None:
  """Why runs here cannot equal those of `target` digit for digit when they train on another
  embedded corpus (its text comes from the running Python); None if the same or unrecorded."""
  try:
    theirs = fmt.read_json(os.path.join(target, CORPUS))
  except (OSError, ValueError):
    return None
  if not theirs:
    return None
  ours = data_lib.embedded_corpus_record()
  if theirs.get("sha256") == ours["sha256"]:
    return None
  return (f"the runs in {target} trained on the embedded corpus {theirs.get('corpus')} "
          f"({theirs.get('documents')} documents); this Python's is {ours['corpus']} "
          f"({ours['documents']}), other text: expect other numbers, and compare verdicts")


def numerics_note(target: str) -> str | None:
  """Why runs here cannot equal those of `target` (an experiment's folder) digit for digit when
  its runs were trained by a train step that rounds differently (`result_format.NUMERICS`); None
  if the same or no runs."""
  names = sorted(os.listdir(target)) if os.path.isdir(target) else []
  summaries = [s for name in names if (s := _finished_summary(os.path.join(target, name)))]
  labels = fmt.other_numerics(summaries)
  if not labels:
    return None
  return (f"the runs in {target} were trained by a step that rounds differently (numerics "
          f"{', '.join(labels)}; this code: {fmt.NUMERICS}): expect other digits, "
          "and compare verdicts")


def config_key(config: dict) -> str:
  """One string per distinct training (key order ignored, and settings that train the same model
  on the same data written one way: `config_schema.same_training`)."""
  return json.dumps(config_schema.same_training(config), sort_keys=True)


def run_dirs(root: str) -> list[str]:
  """The run folders (those with a config.json) of `root`/<experiment>/, in order; not those of
  an export that was killed (`<experiment>.writing`)."""
  if not os.path.isdir(root):
    return []
  return [os.path.join(root, experiment, name)
          for experiment in sorted(os.listdir(root))
          if os.path.isdir(os.path.join(root, experiment)) and not experiment.endswith(".writing")
          for name in sorted(os.listdir(os.path.join(root, experiment)))
          if os.path.exists(os.path.join(root, experiment, name, fmt.CONFIG))]


def read_runs(root: str) -> Iterator[tuple[str, str, dict]]:
  """(run folder, config_key, summary or {}) of each run under `root`/<experiment>/ whose files
  read whole; a torn one (a killed writer) is skipped."""
  for run_dir in run_dirs(root):
    try:
      with open(os.path.join(run_dir, fmt.CONFIG)) as f:
        key = config_key(json.load(f))
      summary = fmt.read_json(os.path.join(run_dir, fmt.SUMMARY)) or {}
    except (OSError, ValueError):
      continue
    yield run_dir, key, summary


def wall_seconds(root: str) -> dict[str, float]:
  """{config_key: wall seconds} of the runs under `root`/<experiment>/ (0 where unknown); a run
  copied into several experiments (the same config.json) counts once."""
  seconds = {}
  for _, key, summary in read_runs(root):
    seconds.setdefault(key, float(summary.get("wall_s") or 0.0))
  return seconds


def totals(root: str) -> tuple[int, int, float]:
  """(run folders, distinct runs, their summed wall minutes) under `root`/<experiment>/."""
  seconds = wall_seconds(root)
  return len(run_dirs(root)), len(seconds), sum(seconds.values()) / 60


if __name__ == "__main__":
  if len(sys.argv) == 3 and sys.argv[1] == "--totals":
    if not os.path.isdir(sys.argv[2]):
      sys.exit(f"--totals: {sys.argv[2]} is not a folder of experiments")
    folders, distinct, minutes = totals(sys.argv[2])
    print(f"{folders} run folders, {distinct} distinct runs, {minutes:.0f} min of run wall time")
  elif len(sys.argv) == 3:
    print(f"{export(sys.argv[1], sys.argv[2])} runs written to {sys.argv[2]}")
  else:
    sys.exit(__doc__)
