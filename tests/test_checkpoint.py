"""Checkpointer details that the end-to-end tests do not reach."""

import jax.numpy as jnp
import numpy as np

from stability import checkpoint


def test_relative_workdir_saves_and_restores(tmp_path, monkeypatch):
  """`--workdir=results/demo/...` is relative; orbax needs absolute paths."""
  monkeypatch.chdir(tmp_path)
  state = {"w": jnp.arange(6.0).reshape(2, 3)}
  ckpt = checkpoint.Checkpointer("results/run/checkpoints", keep=2)
  ckpt.save(3, state, {"step": 3}, {"init_eval_loss": 1.5})
  ckpt.close()
  assert (tmp_path / "results/run/checkpoints/3").is_dir()
  ckpt = checkpoint.Checkpointer("results/run/checkpoints", keep=2)
  step, restored, data_state, loop = ckpt.restore_latest(
      {"w": jnp.zeros((2, 3))})
  ckpt.close()
  assert (step, data_state, loop) == (3, {"step": 3}, {"init_eval_loss": 1.5})
  np.testing.assert_array_equal(restored["w"], state["w"])
