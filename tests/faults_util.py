"""Helpers of the fault suite (tests/test_faults.py); also a tiny experiment and a fault runner.

- An experiment file: `launch.sweep --experiment=tests/faults_util.py` and `stability.main
  --config=tests/faults_util.py:point=seed0` give SEEDS points of d64-L1 that differ only in
  train.seed, so they share every compiled program and the persistent compilation cache makes
  each run after the first about a second.
- A runner: `python -m tests.faults_util MODULE ARGS...` runs MODULE (stability.main,
  launch.sweep) as __main__ after installing the faults listed in $FAULTS (see `install`).
"""

import collections
import contextlib
import json
import os
import pathlib
import runpy
import signal
import sys
import threading
import time

from stability import result_format
from configs import grid as grid_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS, CKPT_EVERY, EVAL_EVERY = 12, 3, 4
SEEDS = 3
SETTINGS = {
    "data.source": "synthetic", "data.synthetic.vocab_size": 259, "data.batch_size": 4,
    "data.eval_batches": 1, "model.seq_len": 16, "model.dtype": "float32", "train.steps": STEPS,
    "opt.warmup_steps": 2, "train.log_every": 1, "train.eval_every": EVAL_EVERY,
    "train.ckpt_every": CKPT_EVERY, "train.keep_ckpts": 3,
}


def get_grid(arg=None) -> grid_lib.Grid:
  kv = grid_lib.parse_grid_arg(arg, "seeds")
  points = [grid_lib.Point(f"seed{i}", "faults", "d64-L1", 3e-3, {**SETTINGS, "train.seed": i})
            for i in range(int(kv.get("seeds", SEEDS)))]
  return grid_lib.Grid("faults", kv["scale"], points, figure="the fault suite")


def get_config(arg=None):
  return grid_lib.experiment_config(get_grid, arg)


def fault_config(overrides=None, point="seed0"):
  """The config of one grid point, then `overrides` ({"group.field": value})."""
  config = get_config(f"point={point}")
  for key, value in (overrides or {}).items():  # as given: bad values are what is tested
    *groups, field = key.split(".")
    node = config
    for group in groups:
      node = node[group]
    node[field] = value
  return config


# --- subprocesses ----------------------------------------------------------------------------


def child_env(faults: str = "") -> dict:
  """CPU, one device, the faults to install (and, from conftest's environment, the session's
  compilation cache)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", FAULTS=faults)
  return env


def main_cmd(workdir, overrides=None) -> list[str]:
  """`stability.main` on point seed0 (plus `overrides`), through the fault runner."""
  flags = [f"--config.{k}={v}" for k, v in (overrides or {}).items()]
  return [sys.executable, "-m", "tests.faults_util", "stability.main", f"--workdir={workdir}",
          f"--config={REPO}/tests/faults_util.py:point=seed0", *flags]


def sweep_cmd(out) -> list[str]:
  return [sys.executable, "-m", "tests.faults_util", "launch.sweep",
          f"--experiment={REPO}/tests/faults_util.py", f"--out={out}"]


def _die() -> None:
  """SIGKILL this process: no handler, no clean-up, whichever thread asks."""
  os.kill(os.getpid(), signal.SIGKILL)
  time.sleep(60)  # not reached: the signal is delivered at once


def install(spec: str, argv: list[str]) -> None:
  """Installs faults in this (child) process; `spec` is "name=value;...":

    throttle=S          sleep S seconds per training batch (so that a signal lands mid-run)
    barrier=DIR:N       start only once N processes have reached the barrier in DIR
    kill_in_write=K     SIGKILL inside orbax's write of checkpoint K (its tmp folder exists)
    term_in_write=K     SIGTERM inside orbax's write of checkpoint K
    kill_after_save=K   SIGKILL as soon as Checkpointer.save(K) returns (the commit in flight)
    kill_on_tmp=K       SIGKILL as soon as a tmp folder of checkpoint >= K appears
  TensorBoard is always off (clu is not importable): JSON lines only, and seconds faster.
  """
  faults = dict(item.partition("=")[::2] for item in spec.split(";") if item)
  sys.modules["clu"] = None
  if "throttle" in faults:
    from stability import data
    seconds, next_batch = float(faults["throttle"]), data.BatchIterator.__next__

    def slow_next(self):
      time.sleep(seconds)
      return next_batch(self)
    data.BatchIterator.__next__ = slow_next
  if "barrier" in faults:
    folder, count = faults["barrier"].rsplit(":", 1)
    pathlib.Path(folder, str(os.getpid())).touch()
    deadline = time.time() + 120
    while len(os.listdir(folder)) < int(count) and time.time() < deadline:
      time.sleep(0.01)
  for name, sig in (("kill_in_write", signal.SIGKILL), ("term_in_write", signal.SIGTERM)):
    if name in faults:
      _signal_in_json_write(int(faults[name]), sig)
  if "kill_after_save" in faults:
    from stability import checkpoint
    target, save = int(faults["kill_after_save"]), checkpoint.Checkpointer.save

    def save_then_die(self, step, *args, **kwargs):
      save(self, step, *args, **kwargs)
      if step == target:
        _die()
    checkpoint.Checkpointer.save = save_then_die
  if "kill_on_tmp" in faults:
    workdir = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
    _watch_for_tmp(pathlib.Path(workdir, "checkpoints"), int(faults["kill_on_tmp"]))


def _signal_in_json_write(target: int, sig) -> None:
  import orbax.checkpoint as ocp
  handler = ocp.handlers.JsonCheckpointHandler
  write, fired = handler._save_fn, []

  async def write_or_signal(self, item, directory):
    step = int(pathlib.Path(directory).parent.name.split(".")[0])
    if step == target and not fired:
      fired.append(step)
      if sig == signal.SIGKILL:
        _die()
      os.kill(os.getpid(), sig)  # the SIGTERM handler runs in the main thread; the write goes on
    return await write(self, item, directory)
  handler._save_fn = write_or_signal


def _watch_for_tmp(checkpoints: pathlib.Path, target: int) -> None:
  def watch():
    while True:
      names = os.listdir(checkpoints) if checkpoints.is_dir() else []
      steps = [int(n.split(".")[0]) for n in names
               if "orbax-checkpoint-tmp" in n and n.split(".")[0].isdigit()]
      if any(step >= target for step in steps):
        _die()
      time.sleep(0.0005)
  threading.Thread(target=watch, daemon=True).start()


# --- in-process helpers ----------------------------------------------------------------------


@contextlib.contextmanager
def fault_env():
  """This process as the children run: no TensorBoard, so no TensorFlow import."""
  saved = sys.modules.get("clu", False)
  sys.modules["clu"] = None
  try:
    yield
  finally:
    if saved is False:
      del sys.modules["clu"]
    else:
      sys.modules["clu"] = saved


_EVENTS = collections.Counter()


def compile_count(kind: str = "all") -> int:
  """jax.monitoring events so far: "all" (traces, lowerings, compiles) or "backend" (compiles).
  Counting starts at the first call."""
  if not _EVENTS:
    from jax import monitoring

    def count(name: str, *args, **kwargs) -> None:
      if name.startswith("/jax/core/compile/"):
        _EVENTS["all"] += 1
        _EVENTS["backend"] += name.endswith("backend_compile_duration")
    monitoring.register_event_duration_secs_listener(count)
    _EVENTS["listening"] = 1
  return _EVENTS[kind]


def inject_nonfinite(monkeypatch, kind: str, at_step: int) -> None:
  """Makes step `at_step` non-finite in one place: the loss (Inf), a gradient or a parameter
  after the update (NaN); traced into the jitted train step of every Run built afterwards (the
  Runs already built keep their programs: the test starts from an empty cache of them)."""
  import jax
  import jax.numpy as jnp
  import optax
  from stability import run as run_lib
  from stability import step as step_lib
  monkeypatch.setattr(run_lib, "_RECENT_RUNS", collections.OrderedDict())
  now = {}
  bad = {"loss": jnp.inf, "grads": jnp.nan, "params": jnp.nan}[kind]

  def poison(x):
    return x + jnp.where(now["step"] == at_step, bad, 0.0).astype(x.dtype)

  def poison_first_leaf(tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, [poison(leaves[0]), *leaves[1:]])

  train_step = step_lib.train_step

  def train_step_at(state, tokens, **kwargs):
    now["step"] = state.step
    return train_step(state, tokens, **kwargs)
  monkeypatch.setattr(step_lib, "train_step", train_step_at)
  if kind == "params":
    apply_updates = optax.apply_updates
    monkeypatch.setattr(step_lib.optax, "apply_updates",
                        lambda params, updates: poison_first_leaf(apply_updates(params, updates)))
    return
  loss_and_grads = step_lib._loss_and_grads

  def poisoned(*args, **kwargs):
    ce, z_loss, stats, grads = loss_and_grads(*args, **kwargs)
    if kind == "loss":
      return poison(ce), z_loss, stats, grads
    return ce, z_loss, stats, poison_first_leaf(grads)
  monkeypatch.setattr(step_lib, "_loss_and_grads", poisoned)


def read_jsonl(path) -> list[dict]:
  """The rows of a JSON-lines file, which must hold no torn or corrupt line."""
  bad: list[int] = []
  rows = result_format.read_jsonl(path, bad)
  assert not bad, f"{path}: corrupt lines {bad}"
  return rows


def snapshot(directory) -> dict[str, bytes]:
  """{relative path: bytes} of every file under `directory`."""
  root = pathlib.Path(directory)
  return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_run(workdir, reference) -> None:
  """The same train losses, evals and final loss as the uninterrupted `reference`, bit for bit,
  and each step logged exactly once."""
  workdir, reference = pathlib.Path(workdir), pathlib.Path(reference)
  got, want = read_jsonl(workdir / "metrics.jsonl"), read_jsonl(reference / "metrics.jsonl")
  assert [r["step"] for r in got] == list(range(STEPS)), [r["step"] for r in got]
  assert [r["train_loss"] for r in got] == [r["train_loss"] for r in want]
  assert [r["grad_norm"] for r in got] == [r["grad_norm"] for r in want]
  assert read_jsonl(workdir / "eval.jsonl") == read_jsonl(reference / "eval.jsonl")
  summary = json.loads((workdir / "summary.json").read_text())
  reference_summary = json.loads((reference / "summary.json").read_text())
  assert summary["status"] == "done" and summary["steps"] == STEPS, summary
  assert summary["final_eval_loss"] == reference_summary["final_eval_loss"]
  assert summary["init_eval_loss"] == reference_summary["init_eval_loss"]


if __name__ == "__main__":
  module, args = sys.argv[1], sys.argv[2:]
  install(os.environ.get("FAULTS", ""), args)
  sys.argv = [module, *args]
  runpy.run_module(module, run_name="__main__", alter_sys=True)
