"""The compiled pieces of a group of M ≥ 1 runs: model, optimizer, mesh, shardings, jitted steps.

The members of a group differ only in scalar optimizer hyper-parameters (`optim.SCALAR_HYPERS`:
peak LR, ε, weight decay, ...), so one program steps them all. With M > 1 the state carries a
leading member axis and the step is `jax.vmap`-ed over it, each member's hyper-parameters traced;
a diverged member's NaNs stay in its own slice. With M = 1 the state has no member axis (a single
run's checkpoint holds its plain state). Either way everything a `Run` returns speaks [M]:
metrics, eval losses and finiteness carry one entry per member.
"""

import collections
import contextlib
import copy
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from stability import checkpoint as checkpoint_lib
from stability import compiler_options
from stability import result_format
from stability import optim
from stability import sharding
from stability import step as step_lib
from stability import validation
from stability.model import Decoder, ModelConfig


def batchable_key(config) -> str:
  """Configs with equal keys differ only in SCALAR_HYPERS and can train as one group."""
  d = result_format.config_json(config)
  for name in optim.SCALAR_HYPERS:
    d["opt"].pop(name, None)
  d["opt"]["clipped"] = config.opt.clip_norm > 0  # clipping on or off changes the program
  return str(sorted((g, sorted(v.items()) if isinstance(v, dict) else v) for g, v in d.items()))


def program_key(configs, vocab_size: int) -> str:
  """Groups with equal keys compile to the same programs: the same vocabulary, as many members,
  and the same batchable key but for the seeds (init and data order are arguments of the
  programs, not part of them), and the same XLA options. Fields no program reads (log and
  checkpoint intervals, data paths) still count: safe, at the cost of some reuse."""
  config = copy.deepcopy(configs[0])
  config.train.seed = config.data.seed = 0
  options = compiler_options.for_training(vocab_size)
  return f"vocab {vocab_size}, {len(configs)} members, {options}, {batchable_key(config)}"


def check_batchable(configs) -> None:
  """Raises ConfigError unless the configs can train as one group."""
  validation.check_one_program(len({batchable_key(c) for c in configs}), optim.SCALAR_HYPERS)


def _check_batch_fits_mesh(mesh, batch_size: int, grad_accum: int) -> None:
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  validation.check_batch_fits_mesh(batch_size, grad_accum, dp)
  pc = jax.process_count()
  if pc > 1:
    shards = sharding.batch_sharding(mesh).addressable_devices_indices_map((dp, 1))
    validation.check_host_shards(len({index[0].indices(dp)[:2] for index in shards.values()}),
                                 pc, dp)


def _with_member_axis(tree_of_shardings):
  """NamedSharding(P(a, b)) -> NamedSharding(P(None, a, b)): the member axis is replicated."""
  return jax.tree_util.tree_map(
      lambda s: NamedSharding(s.mesh, P(None, *s.spec)), tree_of_shardings,
      is_leaf=lambda x: isinstance(x, NamedSharding))


def _per_member(fn, k: int, in_axes: tuple):
  """`fn` of one member as a function of all M, its outputs with a leading [M] axis: vmapped
  over the member axis when M > 1; for M = 1 (no member axis) called once, the axis added."""
  if k > 1:
    return jax.vmap(fn, in_axes=in_axes)
  return lambda *args: jax.tree_util.tree_map(lambda x: x[None], fn(*args))


def _hypers_of(configs) -> dict[str, np.ndarray]:
  return {n: np.asarray([c.opt[n] for c in configs], np.float32) for n in optim.SCALAR_HYPERS}


class Run:
  """M ≥ 1 runs of configs that differ only in SCALAR_HYPERS, compiled as one program."""

  def __init__(self, configs: list[ml_collections.ConfigDict], vocab_size: int, devices=None):
    """`devices`: the mesh's devices (default all; compile-only TPU devices for AOT checks)."""
    # Scalar hyper-parameters are arguments, not constants: every point of an LR sweep runs the
    # same compiled program (and hits JAX's persistent compilation cache).
    self.hypers = _hypers_of(configs)
    self.key = program_key(configs, vocab_size)
    check_batchable(configs)
    self.num_members = len(configs)
    self.config = config = configs[0]
    self.model_cfg = ModelConfig.from_config(config.model, vocab_size)
    self.model = Decoder(self.model_cfg)
    self.optimizer_for = optim.optimizer_builder(
        config.opt, total_steps=config.train.steps,
        parametrization_name=config.model.parametrization, d_model=config.model.d_model,
        mup_base_width=config.model.mup_base_width)
    self.mesh = sharding.make_mesh(config.mesh, devices)
    self.rules = sharding.logical_rules(config.mesh)
    _check_batch_fits_mesh(self.mesh, config.data.batch_size, config.train.grad_accum)
    self.batch_sharding = sharding.batch_sharding(self.mesh)
    self.compiler_options = compiler_options.for_training(
        vocab_size, self.mesh.devices.flat[0].platform)
    self._build_shardings()
    self._build_steps()

  def _build_shardings(self) -> None:
    seq_len = self.config.model.seq_len
    with self.context():
      boxed = jax.eval_shape(functools.partial(step_lib.init_params, self.model, seq_len=seq_len),
                             jax.random.PRNGKey(0))
      param_shardings = sharding.shardings_of(boxed, self.mesh, self.rules)
    optimizer = self.optimizer_for()  # the config's own values: init and state layout
    self._init_one = functools.partial(step_lib.init_state, model=self.model,
                                       optimizer=optimizer, seq_len=seq_len)
    abstract = jax.eval_shape(self._init_one, jax.random.PRNGKey(0))
    repl = sharding.replicated(self.mesh)
    opt_shardings = optax.tree_map_params(
        optimizer.tx, lambda _, s: s, abstract.opt_state, param_shardings,
        transform_non_params=lambda _: repl)
    state_shardings = step_lib.TrainState(
        step=repl, params=param_shardings, opt_state=opt_shardings, first_nonfinite=repl)
    if self.num_members > 1:
      state_shardings, param_shardings = map(_with_member_axis, (state_shardings, param_shardings))
      abstract = jax.tree_util.tree_map(
          lambda a: jax.ShapeDtypeStruct((self.num_members, *a.shape), a.dtype), abstract)
    self.param_shardings, self.state_shardings = param_shardings, state_shardings
    self.abstract_state = checkpoint_lib.abstract_like(abstract, state_shardings)

  def _init(self, rng):
    """One init; with M > 1 every member starts from a copy of it."""
    one = self._init_one(rng)
    if self.num_members == 1:
      return one
    m = self.num_members
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (m, *x.shape)), one)

  def _member_step(self, state, tokens_BxL1, hypers, diagnose: bool):
    c = self.config
    return step_lib.train_step(
        state, tokens_BxL1, model=self.model, optimizer=self.optimizer_for(hypers),
        z_loss_coef=c.loss.z_loss, grad_accum=c.train.grad_accum, diagnose=diagnose)

  def _step(self, state, tokens_BxL1, hypers_M, diagnose: bool):
    """The M members' update: (new state, {metric: [M]})."""
    member = functools.partial(self._member_step, diagnose=diagnose)
    if self.num_members > 1:
      return jax.vmap(member, in_axes=(0, None, 0))(state, tokens_BxL1, hypers_M)
    new_state, metrics = member(state, tokens_BxL1, {n: h[0] for n, h in hypers_M.items()})
    return new_state, jax.tree_util.tree_map(lambda x: x[None], metrics)

  def _build_steps(self) -> None:
    repl = sharding.replicated(self.mesh)
    jit = functools.partial(jax.jit, compiler_options=self.compiler_options or None)
    jit_step = functools.partial(
        jit, in_shardings=(self.state_shardings, self.batch_sharding, repl),
        out_shardings=(self.state_shardings, repl), donate_argnums=0)
    self._steps = {d: jit_step(functools.partial(self._step, diagnose=d)) for d in (False, True)}
    self._jit_init = jit(self._init, out_shardings=self.state_shardings)
    eval_one = functools.partial(step_lib.eval_step, model=self.model)
    self._eval_step = jit(_per_member(eval_one, self.num_members, (0, None)),
                          in_shardings=(self.param_shardings, self.batch_sharding),
                          out_shardings=repl)
    self._params_finite = jit(_per_member(step_lib.params_finite, self.num_members, (0,)),
                              in_shardings=(self.param_shardings,), out_shardings=repl)

  def use_hypers_of(self, configs) -> "Run":
    """These programs for `configs`, whose `program_key` is this run's: their hyper-parameters
    replace its own (the seeds are passed at init, the data order is the iterator's)."""
    check_batchable(configs)
    if program_key(configs, self.model_cfg.vocab_size) != self.key:
      raise ValueError("use_hypers_of needs configs that compile to this run's programs")
    self.config = configs[0]
    self.hypers = _hypers_of(configs)
    self.__dict__.pop("_device_hypers", None)
    return self

  def compiled_step(self, diagnose: bool):
    """The jitted step `(state, tokens, hypers) -> (state, metrics)`, e.g. to `.lower()` it."""
    return self._steps[diagnose]

  @contextlib.contextmanager
  def context(self):
    """Mesh and logical-axis rules, needed while steps are traced."""
    with self.mesh, nn.logical_axis_rules(self.rules):
      yield

  def init_state(self, seed: int) -> step_lib.TrainState:
    """Every member starts from the same initial state (one init, one seed)."""
    with self.context():
      return self._jit_init(jax.random.PRNGKey(seed))

  def global_batch(self, local_BxL1: np.ndarray) -> jax.Array:
    return jax.make_array_from_process_local_data(self.batch_sharding, local_BxL1)

  @functools.cached_property
  def _device_hypers(self):
    """`hypers` on the devices: copied once, not from the host at every step (and not at
    construction: the AOT compile check builds a Run on devices that cannot hold data)."""
    return jax.device_put(self.hypers, sharding.replicated(self.mesh))

  def train_step(self, state, batch, diagnose: bool):
    """(new state, {metric: [M] device array})."""
    with self.context():
      return self._steps[diagnose](state, batch, self._device_hypers)

  def evaluate(self, params, eval_batches) -> np.ndarray:
    """[M] mean eval cross-entropy of each member."""
    with self.context():
      losses = [self._eval_step(params, b) for b in eval_batches]
    return np.mean(np.stack(jax.device_get(losses)), axis=0)

  def params_finite(self, params) -> np.ndarray:
    """[M] whether each member's parameters are all finite."""
    with self.context():
      return np.asarray(jax.device_get(self._params_finite(params)))


# The last few Runs built in this process, by program_key: the next point of a sweep that
# differs only in LR or seed steps through programs already traced and compiled.
# Single-threaded use. A test that patches code traced inside the steps must start from an
# empty cache (monkeypatch `_RECENT_RUNS`), or a Run built earlier keeps its programs.
_RECENT_RUNS: collections.OrderedDict[str, Run] = collections.OrderedDict()
RECENT_RUNS_KEPT = 8  # Fig 1's ladder has 6 (arm, size) programs a seed


def cached_run(configs, vocab_size: int) -> Run:
  """A Run for `configs`: a recent one of the same programs with their hyper-parameters, else
  a new one."""
  key = program_key(configs, vocab_size)
  run = _RECENT_RUNS.pop(key, None)
  run = Run(configs, vocab_size) if run is None else run.use_hypers_of(configs)
  _RECENT_RUNS[key] = run
  while len(_RECENT_RUNS) > RECENT_RUNS_KEPT:
    _RECENT_RUNS.popitem(last=False)
  return run
