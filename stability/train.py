"""Entry points that train configs into result folders: one run, or M runs batched as one group.

`train_and_evaluate(config, workdir)` and `train_batched(configs, workdirs)` are safe to call
again on the same folders: finished runs return their summaries, an interrupted run resumes from
its newest readable checkpoint, and a folder that holds a different config is refused. A batched
group's checkpoint lives in `<first member's parent>/.batched/<group>/`; its members' folders are
those `train_and_evaluate` would write, with `batched_members` = M in the summary.
"""

import hashlib
import logging

import jax
from etils import epath

from stability import data as data_lib
from stability import logs
from stability import loop
from stability import run as run_lib
from stability import sharding
from stability import validation


def resolve_vocab_size(config) -> int:
  """model.vocab_size, or the data's when 0; never smaller than the data's ids need."""
  data_vocab = data_lib.vocab_size(config.data)
  if 0 < config.model.vocab_size < data_vocab:
    raise validation.ConfigError(
        f"config.model.vocab_size={config.model.vocab_size} is smaller than the "
        f"{data_vocab} token ids of data.source={config.data.source!r}: set it to 0 (take the "
        f"data's) or to at least {data_vocab}")
  return config.model.vocab_size or data_vocab


def group_dir(workdirs) -> str:
  """The checkpoint folder of a batched group of run folders."""
  names = "|".join(sorted(str(w) for w in workdirs))
  parent = epath.Path(workdirs[0]).parent
  return str(parent / ".batched" / hashlib.sha1(names.encode()).hexdigest()[:12])


def resumes_as_group(workdirs) -> bool:
  """True when a batched run of exactly these run folders was interrupted: train them together
  again (train_batched), so the group resumes from its own checkpoint; members that finished in
  it (diverged, say) stay as they are."""
  return len(workdirs) > 1 and epath.Path(group_dir(workdirs)).is_dir()


def _validated(configs) -> None:
  logs.quiet_libraries()
  sharding.maybe_initialize_distributed()
  for c in configs:
    validation.validate(c)
  c = configs[0]
  data_lib.validate(c.data, c.model.seq_len, process_count=jax.process_count())


def _train(configs, workdirs, checkpoint_dir) -> list[dict]:
  run = run_lib.cached_run(configs, resolve_vocab_size(configs[0]))  # a bad config fails here
  is_writer = jax.process_index() == 0
  members = [loop.Member(i, c, w, is_writer=is_writer)
             for i, (c, w) in enumerate(zip(configs, workdirs))]
  return loop.train_group(configs[0], run, members, checkpoint_dir)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains one config into `workdir`; returns its summary. Never raises for a divergence."""
  _validated([config])
  finished = loop.finished_summary(config, workdir)
  if finished is not None:
    logging.info("%s already finished (%s); nothing to do", workdir, finished["status"])
    return finished
  [summary] = _train([config], [workdir], epath.Path(workdir) / "checkpoints")
  return summary


def train_batched(configs, workdirs) -> list[dict]:
  """Trains M batchable configs (see `run.batchable_key`) into M workdirs; returns M summaries."""
  _validated(configs)
  previous = [loop.finished_summary(c, w) for c, w in zip(configs, workdirs)]
  if all(previous):
    return previous
  summaries = _train(configs, workdirs, epath.Path(group_dir(workdirs)) / "checkpoints")
  logging.info("batched %d members: %s", len(configs), ", ".join(s["status"] for s in summaries))
  return summaries
