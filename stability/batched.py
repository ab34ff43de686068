"""K runs that differ only in scalar optimizer hyper-parameters, trained as one program.

A learning-rate sweep repeats one architecture and one batch stream K times. Here the parameters
and optimizer state carry a leading run axis, the train step is `jax.vmap`-ed over it with each
member's hyper-parameters (peak LR, ε, weight decay, ...) as traced scalars, and every member
keeps its own result folder, diagnostics, divergence status and summary: a diverged member's
NaNs stay in its own slice and the others train on undisturbed. One compile serves the whole
sweep, and small models fill the machine better.

The members' folders are those `train.train_and_evaluate` would write, by the same loop
(`loop.train_group`), with `batched_members` = K in the summary and the group's timings; the
shared checkpoint lives in `<first member's parent>/.batched/<group>/`.
"""

import functools
import hashlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from stability import data as data_lib
from stability import logs
from stability import loop
from stability import optim
from stability import results
from stability import sharding
from stability import step as step_lib
from stability import train
from stability import validation


def batchable_key(config) -> str:
  """Configs with equal keys differ only in SCALAR_HYPERS and can train as one program."""
  d = loop.config_dict(config)
  for name in optim.SCALAR_HYPERS:
    d["opt"].pop(name, None)
  d["opt"]["clipped"] = config.opt.clip_norm > 0  # clipping on or off changes the program
  return str(sorted((g, sorted(v.items()) if isinstance(v, dict) else v) for g, v in d.items()))


def _varying_hypers(configs) -> dict[str, np.ndarray]:
  return {name: np.asarray([c.opt[name] for c in configs], np.float32)
          for name in optim.SCALAR_HYPERS}


def _with_run_axis(tree_of_shardings):
  """NamedSharding(P(a, b)) -> NamedSharding(P(None, a, b)): the run axis is replicated."""
  return jax.tree_util.tree_map(
      lambda s: NamedSharding(s.mesh, P(None, *s.spec)), tree_of_shardings,
      is_leaf=lambda x: isinstance(x, NamedSharding))


class BatchedRun:
  """The vmapped step, eval and init for K members, built on a single member's `train.Run`."""

  def __init__(self, configs, vocab_size: int):
    self.k = len(configs)
    self.single = train.Run(configs[0], vocab_size)
    run, cfg = self.single, configs[0]
    self.model_cfg = run.model_cfg
    self.hypers = {n: jnp.asarray(v) for n, v in _varying_hypers(configs).items()}
    self.state_shardings = _with_run_axis(run.state_shardings)
    self.abstract_state = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct((self.k, *a.shape), a.dtype, sharding=s),
        run.abstract_state, self.state_shardings)
    repl = sharding.replicated(run.mesh)
    param_shardings = _with_run_axis(run.param_shardings)

    def init(rng):
      one = step_lib.init_state(rng, model=run.model, optimizer=run.optimizer,
                                seq_len=cfg.model.seq_len)
      return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (self.k, *x.shape)), one)

    def member_step(state, batch, hypers, diagnose):
      return step_lib.train_step(state, batch, model=run.model, optimizer=run.optimizer_for(hypers),
                                 z_loss_coef=cfg.loss.z_loss, grad_accum=cfg.train.grad_accum,
                                 diagnose=diagnose)

    def batched_step(state, batch, hypers, diagnose):
      return jax.vmap(functools.partial(member_step, diagnose=diagnose),
                      in_axes=(0, None, 0))(state, batch, hypers)

    jit_step = functools.partial(
        jax.jit, in_shardings=(self.state_shardings, run.batch_sharding, repl),
        out_shardings=(self.state_shardings, repl), donate_argnums=0)
    self._init = jax.jit(init, out_shardings=self.state_shardings)
    self._train_step = jit_step(functools.partial(batched_step, diagnose=False))
    self._diagnose_step = jit_step(functools.partial(batched_step, diagnose=True))
    self._eval_step = jax.jit(
        jax.vmap(functools.partial(step_lib.eval_step, model=run.model), in_axes=(0, None)),
        in_shardings=(param_shardings, run.batch_sharding), out_shardings=repl)
    self._params_finite = jax.jit(jax.vmap(step_lib.params_finite),
                                  in_shardings=(param_shardings,), out_shardings=repl)

  def init_state(self, seed: int):
    with self.single.context():
      return self._init(jax.random.PRNGKey(seed))

  def global_batch(self, local_BxL1: np.ndarray) -> jax.Array:
    return self.single.global_batch(local_BxL1)

  def train_step(self, state, batch, diagnose: bool):
    with self.single.context():
      return (self._diagnose_step if diagnose else self._train_step)(state, batch, self.hypers)

  def evaluate(self, params, eval_batches) -> np.ndarray:
    """[K] mean eval CE of every member."""
    with self.single.context():
      losses = [self._eval_step(params, b) for b in eval_batches]
    return np.mean(np.stack(jax.device_get(losses)), axis=0)

  def params_finite(self, params) -> np.ndarray:
    """[K] whether each member's parameters are all finite."""
    with self.single.context():
      return np.asarray(jax.device_get(self._params_finite(params)))


def group_dir(workdirs) -> str:
  names = "|".join(sorted(str(w) for w in workdirs))
  parent = results.epath.Path(workdirs[0]).parent
  return str(parent / ".batched" / hashlib.sha1(names.encode()).hexdigest()[:12])


def train_batched(configs, workdirs) -> list[dict]:
  """Trains K batchable configs (see `batchable_key`) into K workdirs; returns K summaries."""
  logs.quiet_libraries()
  if len({batchable_key(c) for c in configs}) != 1:
    raise validation.ConfigError(
        "batched members must differ only in " + ", ".join(f"opt.{n}" for n in optim.SCALAR_HYPERS))
  sharding.maybe_initialize_distributed()
  for c in configs:
    validation.validate(c)
  cfg = configs[0]
  data_lib.validate(cfg.data, cfg.model.seq_len, process_count=jax.process_count())
  previous = [loop.finished_summary(c, w) for c, w in zip(configs, workdirs)]
  if all(previous):
    return previous
  run = BatchedRun(configs, train.resolve_vocab_size(cfg))
  is_writer = jax.process_index() == 0
  members = [loop.Member(i, c, w, is_writer=is_writer)
             for i, (c, w) in enumerate(zip(configs, workdirs))]
  checkpoints = results.epath.Path(group_dir(workdirs)) / "checkpoints"
  summaries = loop.train_group(cfg, run, members, checkpoints)
  logging.info("batched %d members: %s", run.k, ", ".join(s["status"] for s in summaries))
  return summaries
