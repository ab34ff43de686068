"""One point of a grid, end to end: config -> sharded state -> train loop -> result folder.

`Run` holds the compiled pieces of one run; the loop that drives them is `loop.train_group`,
shared with batched sweeps.

`train_and_evaluate(config, workdir)` is safe to call again on the same workdir: a finished run
returns its summary, an interrupted one resumes from its newest readable checkpoint, and a
workdir that holds a different config is refused.
"""

import contextlib
import functools
import logging

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from stability import checkpoint as checkpoint_lib
from stability import data as data_lib
from stability import logs
from stability import loop
from stability import optim
from stability import sharding
from stability import step as step_lib
from stability import validation
from stability.model import Decoder, ModelConfig


def _check_batch_fits_mesh(config, mesh) -> None:
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  micro = config.data.batch_size // config.train.grad_accum
  if micro % dp:
    raise validation.ConfigError(
        f"config.data.batch_size={config.data.batch_size} (per microbatch {micro} with "
        f"train.grad_accum={config.train.grad_accum}) is not divisible by the {dp} data-parallel "
        "devices (mesh.data × mesh.fsdp); change the batch size or the mesh")
  pc = jax.process_count()
  if pc > 1:  # process p feeds rows [p·B/P, (p+1)·B/P): its devices must hold exactly those
    shards = sharding.batch_sharding(mesh).addressable_devices_indices_map((dp, 1))
    local = len({index[0].indices(dp)[:2] for index in shards.values()})
    if local * pc != dp:
      raise validation.ConfigError(
          f"each of the {pc} processes feeds 1/{pc} of the batch, but this one's devices hold "
          f"{local} of the {dp} batch shards (mesh.data × mesh.fsdp); make that product a "
          "multiple of the process count and keep mesh.tensor within one host")


class Run:
  """The compiled pieces of one run: model, optimizer, mesh, shardings and jitted steps."""

  def __init__(self, config: ml_collections.ConfigDict, vocab_size: int, devices=None):
    """`devices`: the mesh's devices (default all; compile-only TPU devices for AOT checks)."""
    self.config = config
    self.model_cfg = ModelConfig.from_config(config.model, vocab_size)
    self.model = Decoder(self.model_cfg)
    self.optimizer = optim.make_optimizer(
        config.opt, total_steps=config.train.steps,
        parametrization_name=config.model.parametrization, d_model=config.model.d_model,
        mup_base_width=config.model.mup_base_width)
    self.mesh = sharding.make_mesh(config.mesh, devices)
    self.rules = sharding.logical_rules(config.mesh)
    _check_batch_fits_mesh(config, self.mesh)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    repl = sharding.replicated(self.mesh)

    seq_len = config.model.seq_len
    with self.context():
      boxed = jax.eval_shape(
          functools.partial(step_lib.init_params, self.model, seq_len=seq_len),
          jax.random.PRNGKey(0))
      self.param_shardings = sharding.shardings_of(boxed, self.mesh, self.rules)
    init = functools.partial(step_lib.init_state, model=self.model, optimizer=self.optimizer,
                             seq_len=seq_len)
    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    opt_shardings = optax.tree_map_params(
        self.optimizer.tx, lambda _, s: s, abstract.opt_state, self.param_shardings,
        transform_non_params=lambda _: repl)
    self.state_shardings = step_lib.TrainState(
        step=repl, params=self.param_shardings, opt_state=opt_shardings, first_nonfinite=repl)
    self.abstract_state = checkpoint_lib.abstract_like(abstract, self.state_shardings)

    self._init = jax.jit(init, out_shardings=self.state_shardings)
    # Scalar hyper-parameters are arguments, not constants: every point of an LR sweep runs the
    # same compiled program (and hits JAX's persistent compilation cache).
    self.hypers = {n: np.float32(config.opt[n]) for n in optim.SCALAR_HYPERS}

    def step_fn(state, batch, hypers, diagnose):
      return step_lib.train_step(
          state, batch, model=self.model, optimizer=self.optimizer_for(hypers),
          z_loss_coef=config.loss.z_loss, grad_accum=config.train.grad_accum, diagnose=diagnose)

    jit_step = functools.partial(
        jax.jit, in_shardings=(self.state_shardings, self.batch_sharding, repl),
        out_shardings=(self.state_shardings, repl), donate_argnums=0)
    self._train_step = jit_step(functools.partial(step_fn, diagnose=False))
    self._diagnose_step = jit_step(functools.partial(step_fn, diagnose=True))
    self._eval_step = jax.jit(functools.partial(step_lib.eval_step, model=self.model),
                              in_shardings=(self.param_shardings, self.batch_sharding),
                              out_shardings=repl)
    self._params_finite = jax.jit(step_lib.params_finite, in_shardings=(self.param_shardings,),
                                  out_shardings=repl)

  def optimizer_for(self, hypers) -> optim.Optimizer:
    """This config's optimizer with SCALAR_HYPERS taken from `hypers` (traced inside a step)."""
    c = self.config
    return optim.make_optimizer(
        c.opt, total_steps=c.train.steps, parametrization_name=c.model.parametrization,
        d_model=c.model.d_model, mup_base_width=c.model.mup_base_width, hypers=hypers)

  @contextlib.contextmanager
  def context(self):
    """Mesh and logical-axis rules, needed while steps are traced."""
    with self.mesh, nn.logical_axis_rules(self.rules):
      yield

  def init_state(self, seed: int) -> step_lib.TrainState:
    with self.context():
      return self._init(jax.random.PRNGKey(seed))

  def global_batch(self, local_BxL1: np.ndarray) -> jax.Array:
    return jax.make_array_from_process_local_data(self.batch_sharding, local_BxL1)

  @functools.cached_property
  def _device_hypers(self):
    """`hypers` on the devices: copied once, not from the host at every step (and not at
    construction: the AOT compile check builds a Run on devices that cannot hold data)."""
    return jax.device_put(self.hypers, sharding.replicated(self.mesh))

  def train_step(self, state, batch, diagnose: bool):
    with self.context():
      step = self._diagnose_step if diagnose else self._train_step
      return step(state, batch, self._device_hypers)

  def evaluate(self, params, eval_batches) -> float:
    with self.context():
      losses = [self._eval_step(params, b) for b in eval_batches]
    return float(np.mean(jax.device_get(losses)))

  def params_finite(self, params) -> bool:
    with self.context():
      return bool(self._params_finite(params))


def resolve_vocab_size(config) -> int:
  """model.vocab_size, or the data's when 0; never smaller than the data's ids need."""
  data_vocab = data_lib.vocab_size(config.data)
  if 0 < config.model.vocab_size < data_vocab:
    raise validation.ConfigError(
        f"config.model.vocab_size={config.model.vocab_size} is smaller than the "
        f"{data_vocab} token ids of data.source={config.data.source!r}: set it to 0 (take the "
        f"data's) or to at least {data_vocab}")
  return config.model.vocab_size or data_vocab


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains one config into `workdir`; returns its summary. Never raises for a divergence."""
  logs.quiet_libraries()
  sharding.maybe_initialize_distributed()
  validation.validate(config)
  data_lib.validate(config.data, config.model.seq_len, process_count=jax.process_count())
  finished = loop.finished_summary(config, workdir)
  if finished is not None:
    logging.info("%s already finished (%s); nothing to do", workdir, finished["status"])
    return finished
  run = Run(config, resolve_vocab_size(config))  # everything that can fail on a bad config fails here
  member = loop.Member(0, config, workdir, is_writer=jax.process_index() == 0)
  [summary] = loop.train_group(config, run, [member], member.files.dir / "checkpoints")
  return summary
