"""Trains one config into a workdir.

  python -m stability.main --workdir=results/tiny \
    --config=configs/base.py:size=d64-L2,data=embedded --config.train.steps=200

Re-running the same command resumes an interrupted run and does nothing for a finished one.
A bad config or data setting stops it with one line and exit code 2 (`--verbose`: the traceback).
"""

import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from stability import data
from stability import runtime
from stability import train
from stability import validation

# Unknown fields are let through here so that validation can name the known ones.
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "ml-collections config file[:arg]", lock_config=False,
    accept_new_attributes=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where the run's result folder goes")
_VERBOSE = flags.DEFINE_bool("verbose", False, "on a config or data error, the whole traceback")
flags.mark_flags_as_required(["config", "workdir"])


def fail(message: str) -> None:
  """One line on stderr and exit code 2: a usage, config or data error."""
  print(f"stability.main: error: {message}", file=sys.stderr)
  sys.exit(2)


def check_config_path(argv: list[str]) -> None:
  """Names a --config file that does not exist, before ml_collections fails on it obscurely."""
  for arg in argv[1:]:
    if arg.startswith("--config="):
      path = arg.split("=", 1)[1].split(":", 1)[0]
      if not os.path.isfile(path):
        fail(f"--config: no file {path!r} (e.g. --config=configs/base.py:size=d64-L2,data=embedded)")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  try:
    runtime.prepare_training_process()  # ValueError: a bad $STABILITY_... setting
  except ValueError as e:
    fail(str(e))
  try:
    summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (validation.ConfigError, data.DataError) as e:
    if _VERBOSE.value:
      raise
    fail(str(e))
  print(json.dumps({k: summary.get(k) for k in (
      "status", "steps", "init_eval_loss", "final_eval_loss", "diverged_at_step", "tokens_per_s",
      "mfu")}, indent=1))
  sys.exit(0 if summary["status"] in ("done", "diverged", "preempted") else 1)


if __name__ == "__main__":
  check_config_path(sys.argv)
  app.run(main)
