"""Runs a grid on every host of a pod slice together: one point at a time, all hosts on it.

  python -m launch.tpu.pod_sweep --experiment=configs/fig1_qk_layernorm.py:scale=paper \
      --out=gs://my-bucket/fig1 [--only=d2048] [--set=model.remat=full]

`launch.tpu.pod sweep` starts this on every worker. It takes the flags of `launch.sweep`, but
JAX multi-controller needs every process in the same program, so unlike `launch.sweep` (one
runner per point, claimed with lock files) all processes walk the grid in the same order and
train each unfinished point together. Finished points (done / diverged) are skipped, so a
relaunch after a preemption resumes the interrupted point from its checkpoint and goes on.
Use one slice per sweep folder (or split a grid between slices with --only=<regex>).

Exit code: 0 when every point is finished, 75 when stopped by a preemption (relaunch it),
1 when some point failed.
"""

import json
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from etils import epath

from configs import grid as grid_lib
from launch import sweep  # defines --experiment, --out, --only, --set (and --dry_run, ...)

FLAGS = flags.FLAGS
EXIT_PREEMPTED = 75


def run_grid_all_hosts(grid: grid_lib.Grid, out: str, only: str = "") -> dict[str, int]:
  """Trains every unfinished point with all processes; returns counts by final status."""
  import jax
  from stability import sharding
  from stability import train

  sharding.maybe_initialize_distributed()
  out_dir = epath.Path(out)
  if jax.process_index() == 0:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.json").write_text(json.dumps(grid.to_json(), indent=1))
  counts: dict[str, int] = {}
  points = [p for p in grid.points if re.search(only, p.name)]  # as launch.sweep --only
  for i, point in enumerate(points):
    try:
      status = train.train_and_evaluate(grid_lib.config_for(point, grid.scale),
                                        os.fspath(out_dir / point.name))["status"]
    except Exception as e:  # a config that cannot run fails the same way on every process
      logging.exception("point %s failed: %s", point.name, e)
      status = "failed"
    counts[status] = counts.get(status, 0) + 1
    if jax.process_index() == 0:
      print(f"[pod_sweep] {i + 1}/{len(points)} {point.name}: {status}", flush=True)
    if status == "preempted":
      break
  return counts


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.experiment or not FLAGS.out:
    raise app.UsageError("--experiment=configs/<file>.py[:scale=paper] and --out=gs://... "
                         "are required")
  try:
    grid = sweep.checked_grid(FLAGS.experiment, FLAGS.set)
  except ValueError as e:
    print(f"launch.tpu.pod_sweep: error: {e}", file=sys.stderr)
    sys.exit(2)
  counts = run_grid_all_hosts(grid, FLAGS.out, FLAGS.only)
  print(f"[pod_sweep] {FLAGS.out}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
        flush=True)
  if counts.get("preempted"):
    sys.exit(EXIT_PREEMPTED)
  sys.exit(1 if counts.get("failed") else 0)


if __name__ == "__main__":
  app.run(main)
