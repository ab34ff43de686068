"""Orbax checkpoints of the train state, the data iterator and the loop's bookkeeping, together.

A step is saved as one composite item, so a restore never mixes a state with another step's data
position. A checkpoint that cannot be read (truncated, partly deleted) is skipped with a warning
and the previous one is used; a run is never restarted from scratch when a checkpoint exists.
"""

import logging

import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:

  def __init__(self, directory, *, keep: int = 2, async_save: bool = True):
    self.directory = epath.Path(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save),
    )

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, state, data_state: dict, loop_state: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        loop=ocp.args.JsonSave(loop_state)), force=True)

  def restore_latest(self, abstract_state):
    """(step, state, data_state, loop_state) of the newest readable checkpoint, or None."""
    steps = self.all_steps()
    for step in reversed(steps):
      try:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            loop=ocp.args.JsonRestore()))
        return step, restored["state"], restored["data"], restored["loop"]
      except Exception as e:  # a truncated or partly deleted checkpoint
        logging.warning("checkpoint %d in %s is unreadable (%s: %s); trying the previous one",
                        step, self.directory, type(e).__name__, str(e)[:200])
    if steps:
      raise RuntimeError(
          f"no readable checkpoint in {self.directory} (steps {steps} all failed to restore); "
          "refusing to train from scratch over them: move the folder away to start afresh")
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(state, shardings):
  """ShapeDtypeStructs with shardings, the restore target of `restore_latest`."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
