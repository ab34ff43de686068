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
from stability import members as members_lib
from stability import run as run_lib
from stability import sharding
from stability import validation


def resolve_vocab_size(config, source: data_lib.Source) -> int:
  """model.vocab_size, or the data's (`source`'s) when 0; never smaller than its ids need."""
  data_vocab = source.vocab_size
  validation.check_vocab_size(config.model.vocab_size, data_vocab, source.name)
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


def _validated(configs) -> data_lib.Source:
  """Checks every config, then the (shared) data config; returns the data source it made."""
  logs.quiet_libraries()
  sharding.maybe_initialize_distributed()
  for c in configs:
    validation.validate(c)
  c = configs[0]
  return data_lib.validate(c.data, c.model.seq_len, process_count=jax.process_count())


def _train(configs, workdirs, checkpoint_dir, source: data_lib.Source) -> list[dict]:
  vocab_size = resolve_vocab_size(configs[0], source)
  run = run_lib.cached_run(configs, vocab_size)  # a bad config fails here
  group = members_lib.Group(run, configs, workdirs, is_writer=jax.process_index() == 0)
  return loop.train_group(run, group, checkpoint_dir, source)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains one config into `workdir`; returns its summary. Never raises for a divergence."""
  source = _validated([config])
  finished = members_lib.finished_summary(config, workdir)
  if finished is not None:
    logging.info("%s already finished (%s); nothing to do", workdir, finished["status"])
    return finished
  [summary] = _train([config], [workdir], epath.Path(workdir) / "checkpoints", source)
  return summary


def train_batched(configs, workdirs) -> list[dict]:
  """Trains M batchable configs (see `run.batchable_key`) into M workdirs; returns M summaries."""
  source = _validated(configs)
  previous = [members_lib.finished_summary(c, w) for c, w in zip(configs, workdirs)]
  if all(previous):
    return previous
  summaries = _train(configs, workdirs, epath.Path(group_dir(workdirs)) / "checkpoints", source)
  logging.info("batched %d members: %s", len(configs), ", ".join(s["status"] for s in summaries))
  return summaries
