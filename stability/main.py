"""Trains one config into a workdir.

  python -m stability.main --workdir=results/tiny \
    --config=configs/base.py:size=d64-L2,data=embedded --config.train.steps=200

Re-running the same command resumes an interrupted run and does nothing for a finished one.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from stability import runtime
from stability import train

# Unknown fields are let through here so that validation can name the known ones.
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "ml-collections config file[:arg]", lock_config=False,
    accept_new_attributes=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "where the run's result folder goes")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  runtime.prepare_training_process()
  summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  print(json.dumps({k: summary.get(k) for k in (
      "status", "steps", "init_eval_loss", "final_eval_loss", "diverged_at_step", "tokens_per_s",
      "mfu")}, indent=1))
  sys.exit(0 if summary["status"] in ("done", "diverged", "preempted") else 1)


if __name__ == "__main__":
  app.run(main)
