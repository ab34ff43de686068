"""Follows `config` through one `train_and_evaluate`: the files its calls enter, in order.

  python -m tests.config_walk

A stay is a run of calls, each taking the config (or one of its groups), in one file; a return
is a stay in a file the walk had already left. docs/conventions.md describes the route.
"""

import os
import sys
import tempfile

import ml_collections

from configs import base
from stability import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(train.__file__)))


def tiny_config() -> ml_collections.ConfigDict:
  config = base.get_config("size=d64-L2,data=synthetic")
  config.train.update(steps=4, log_every=2, eval_every=4, ckpt_every=4)
  config.opt.warmup_steps = 1
  config.data.update(batch_size=4, eval_batches=1)
  config.data.synthetic.vocab_size = 64
  config.model.seq_len = 16
  return config


def calls_taking(config) -> list[tuple[str, str]]:
  """(file, function) of every call into stability/ with the config or a group as an argument."""
  ids = {id(config)} | {id(v) for v in config.values() if isinstance(v, ml_collections.ConfigDict)}
  calls = []

  def takes_config(frame) -> bool:
    code = frame.f_code
    for name in code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]:
      value = frame.f_locals.get(name)
      if id(value) in ids or (isinstance(value, (list, tuple))
                              and any(id(x) in ids for x in value)):
        return True
    return False

  def profile(frame, event, arg):
    path = frame.f_code.co_filename
    if event == "call" and path.startswith(os.path.join(ROOT, "stability")) and takes_config(frame):
      calls.append((os.path.relpath(path, ROOT), frame.f_code.co_name))

  with tempfile.TemporaryDirectory() as folder:
    sys.setprofile(profile)
    try:
      train.train_and_evaluate(config, os.path.join(folder, "run"))
    finally:
      sys.setprofile(None)
  return calls


def stays(calls) -> list[tuple[str, list[str]]]:
  """Consecutive calls in one file, merged: (file, its functions in first-call order)."""
  out = []
  for path, function in calls:
    if not out or out[-1][0] != path:
      out.append((path, [function]))
    elif function not in out[-1][1]:
      out[-1][1].append(function)
  return out


def returns(walk) -> list[str]:
  """The files of the stays that come back to a file the walk had already left."""
  files = [path for path, _ in walk]
  return [path for i, path in enumerate(files) if path in files[:i]]


def main() -> None:
  walk = stays(calls_taking(tiny_config()))
  files = {path for path, _ in walk}
  print(f"{len(walk)} stays in {len(files)} files, {len(returns(walk))} returns to a file "
        "already left")
  for path, functions in walk:
    print(f"  {path}: {', '.join(functions)}")


if __name__ == "__main__":
  main()
