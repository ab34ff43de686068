"""Orbax checkpoints of the train state, the data iterator and the loop's bookkeeping, together.

A step is saved as one composite item, so a restore never mixes a state with another step's data
position. A checkpoint that cannot be read (truncated, partly deleted) is skipped with a warning,
moved aside (`<step>.unreadable-<n>`, kept for inspection) and the previous one is used; a run is
never restarted from scratch when a checkpoint exists. A save that fails (a full disk) raises
`CheckpointSaveError` naming the step, the folder and the newest intact checkpoint.
"""

import contextlib
import logging
import os

import jax
import orbax.checkpoint as ocp
from etils import epath


class CheckpointSaveError(OSError):
  """A checkpoint could not be written; the older checkpoints are intact."""


class Checkpointer:

  def __init__(self, directory, *, keep: int = 2, async_save: bool = True):
    # orbax wants absolute paths; a relative local workdir (results/demo/...) is made absolute.
    self.directory = epath.Path(directory if "://" in str(directory) else os.path.abspath(directory))
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save),
    )
    self._in_flight = None  # the step whose asynchronous save may still be running

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, loop_state: dict) -> None:
    self.wait()  # surfaces a failed asynchronous save of the previous step
    self._in_flight = step
    with self._failures_named(step):
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data_state),
          loop=ocp.args.JsonSave(loop_state)), force=True)

  def restore_latest(self, abstract_state):
    """(step, state, data_state, loop_state) of the newest readable checkpoint, or None."""
    steps = self.all_steps()
    unreadable = []
    for step in reversed(steps):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            loop=ocp.args.JsonRestore()))
      except Exception as e:  # a truncated or partly deleted checkpoint
        logging.warning("checkpoint %d in %s is unreadable (%s: %s); trying the previous one",
                        step, self.directory, type(e).__name__, str(e)[:200])
        unreadable.append(step)
        continue
      self._move_aside(unreadable)
      return step, restored["state"], restored["data"], restored["loop"]
    if steps:
      raise RuntimeError(
          f"no readable checkpoint in {self.directory} (steps {steps} all failed to restore); "
          "refusing to train from scratch over them: move the folder away to start afresh")
    return None

  def _move_aside(self, steps: list[int]) -> None:
    """Renames unreadable checkpoints out of orbax's view, so the run can save those steps again."""
    if not steps:
      return
    if jax.process_index() == 0:
      for step in steps:
        n = 0
        while (self.directory / f"{step}.unreadable-{n}").exists():
          n += 1
        target = self.directory / f"{step}.unreadable-{n}"
        (self.directory / str(step)).rename(target)
        logging.warning("moved the unreadable checkpoint %d aside to %s", step, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("stability_checkpoint_move_aside")
    self.manager.reload()

  @contextlib.contextmanager
  def _failures_named(self, step: int):
    """Re-raises a failed save as CheckpointSaveError: which step, where, what is left."""
    try:
      yield
    except Exception as e:
      self._in_flight = None
      raise self._save_error(step, e) from e

  def _save_error(self, step: int, error: Exception) -> CheckpointSaveError:
    try:
      self.manager.reload()
      intact = [s for s in self.all_steps() if s != step]
    except Exception:  # the folder itself may be what failed
      intact = []
    left = (f"the newest intact checkpoint is step {intact[-1]}: free space (or fix the folder) "
            "and rerun the same command to resume from it" if intact else
            "there is no older checkpoint: free space (or fix the folder) and rerun")
    message = (f"saving checkpoint {step} to {self.directory} failed "
               f"({type(error).__name__}: {error}); {left}")
    errno = getattr(error, "errno", None)
    return CheckpointSaveError(errno, message) if errno else CheckpointSaveError(message)

  def wait(self) -> None:
    if self._in_flight is None:
      self.manager.wait_until_finished()
      return
    with self._failures_named(self._in_flight):
      self.manager.wait_until_finished()
    self._in_flight = None

  def close(self) -> None:
    try:
      self.wait()
    except Exception:
      with contextlib.suppress(Exception):
        self.manager.close()
      raise
    self.manager.close()


def abstract_like(state, shardings):
  """ShapeDtypeStructs with shardings, the restore target of `restore_latest`."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
