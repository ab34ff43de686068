"""One point of a grid, end to end: config -> sharded state -> train loop -> result folder.

`train_and_evaluate(config, workdir)` is safe to call again on the same workdir: a finished run
returns its summary, an interrupted one resumes from its newest readable checkpoint, and a
workdir that holds a different config is refused.
"""

import contextlib
import functools
import json
import logging
import math
import signal
import time

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from stability import checkpoint as checkpoint_lib
from stability import data as data_lib
from stability import flops
from stability import logs
from stability import optim
from stability import results
from stability import sharding
from stability import step as step_lib
from stability import validation
from stability.model import Decoder, ModelConfig

FINISHED = ("done", "diverged")


class _Preemption:
  """Turns SIGTERM (TPU preemption, `kill`) into a stop the loop checks between steps.

  With several processes JAX's preemption service owns SIGTERM and picks one step at which every
  process stops, so all of them take part in the same checkpoint (a per-process flag deadlocks).
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    self._multihost = jax.process_count() > 1

  def reached(self, step: int) -> bool:
    """Whether to checkpoint and stop after `step`; call once per step on every process."""
    if self._multihost:
      from jax.experimental import multihost_utils
      self.requested = multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def __enter__(self):
    if self._multihost:
      return self
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM: saving a checkpoint and stopping after this step")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _jsonable_config(config: ml_collections.ConfigDict) -> dict:
  return json.loads(json.dumps(config.to_dict()))


def _check_workdir_config(files: results.RunFiles, config_dict: dict) -> None:
  existing = files.existing_config()
  if existing is not None and existing != config_dict:
    changed = sorted(
        f"{g}.{k}" for g in set(existing) | set(config_dict)
        for k in set(existing.get(g, {}) or {}) | set(config_dict.get(g, {}) or {})
        if (existing.get(g) or {}).get(k) != (config_dict.get(g) or {}).get(k))
    raise validation.ConfigError(
        f"workdir {files.dir} holds a run with a different config (differs in: "
        f"{', '.join(changed) or 'structure'}); use a new --workdir, or delete that one")


def _make_tensorboard_writer(workdir, is_writer: bool):
  """clu's TensorBoard writer, or None (JSON lines only) when TensorFlow/clu are absent."""
  if not is_writer:
    return None
  try:
    from clu import metric_writers  # imports TensorFlow
    return metric_writers.create_default_writer(workdir, asynchronous=False)
  except ImportError as e:
    logging.warning("no TensorBoard events (%s); results are in the JSON-lines files", e)
    return None


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

  def train_step(self, state, batch, diagnose: bool):
    with self.context():
      return (self._diagnose_step if diagnose else self._train_step)(state, batch, self.hypers)

  def evaluate(self, params, eval_batches) -> float:
    with self.context():
      losses = [self._eval_step(params, b) for b in eval_batches]
    return float(np.mean(jax.device_get(losses)))


def _host_metrics(metrics) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


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
  seq_len = config.model.seq_len
  data_lib.validate(config.data, seq_len, process_count=jax.process_count())
  is_writer = jax.process_index() == 0
  config_dict = _jsonable_config(config)

  files = results.RunFiles(workdir, writer=False)
  if files.dir.exists():
    _check_workdir_config(files, config_dict)
    previous = files.read_summary()
    if previous and previous.get("status") in FINISHED:
      logging.info("%s already finished (%s); nothing to do", workdir, previous["status"])
      return previous

  vocab_size = resolve_vocab_size(config)
  run = Run(config, vocab_size)  # everything that can fail on a bad config fails here
  files = results.RunFiles(workdir, writer=is_writer)
  files.write_config(config_dict)
  try:
    return _train_loop(config, run, files, workdir)
  except Exception as e:
    files.write_summary({**(files.read_summary() or {}), "status": "failed",
                         "error": f"{type(e).__name__}: {e}"[:2000]})
    raise


def _train_loop(config, run: Run, files: results.RunFiles, workdir: str) -> dict:
  t = config.train
  seq_len = config.model.seq_len
  total = t.steps
  tokens_per_step = config.data.batch_size * seq_len
  pi, pc = jax.process_index(), jax.process_count()
  writer = _make_tensorboard_writer(workdir, files.writer)
  ckpt = checkpoint_lib.Checkpointer(files.dir / "checkpoints", keep=t.keep_ckpts)

  train_iter = data_lib.make_train_iterator(config.data, seq_len, process_index=pi,
                                            process_count=pc)
  eval_batches = [run.global_batch(b) for b in data_lib.make_eval_batches(
      config.data, seq_len, process_index=pi, process_count=pc)]

  restored = ckpt.restore_latest(run.abstract_state)
  if restored is not None:
    start, state, data_state, loop = restored
    train_iter.set_state(data_state)
    # The eval row of step `total` is the final eval, written after the loop: written again.
    files.truncate(metrics_before=start, evals_through=min(start, total - 1))
    logging.info("resumed %s from step %d", workdir, start)
  else:
    start, loop = 0, {}
    # Rows of an earlier attempt that left no checkpoint (e.g. killed before its first save).
    files.truncate(metrics_before=0, evals_through=-1)
    state = run.init_state(t.seed)
    loop["init_eval_loss"] = run.evaluate(state.params, eval_batches)
    files.append_eval({"step": 0, "eval_loss": loop["init_eval_loss"]})
    if writer is not None:
      writer.write_hparams({k: v for k, v in _flatten(files.existing_config() or {}).items()})
  loop.setdefault("over_margin", 0)
  loop.setdefault("wall_s", 0.0)
  init_loss = loop["init_eval_loss"]

  num_params = flops.non_embedding_params(config.model.d_model, config.model.num_layers,
                                          config.model.mlp_ratio)
  flops_per_token = flops.model_flops_per_token(config.model, run.model_cfg.vocab_size)
  summary = {
      "name": files.dir.name, "status": "running", "init_eval_loss": init_loss,
      "final_eval_loss": None, "diverged_at_step": None, "steps": start,
      "tokens": start * tokens_per_step, "num_params": num_params,
      "vocab_size": run.model_cfg.vocab_size, "flops_per_token": flops_per_token,
      "num_devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
  }
  files.write_summary(summary)

  diverged_at = None
  status = "running"
  timer = _Throughput()
  session_start = time.time()
  pending = None  # (step, metrics) of the last log step, fetched one step late

  def handle(step: int, metrics) -> int | None:
    """Writes one log row; returns the divergence step, if any."""
    row = _host_metrics(metrics)
    first_nonfinite = int(row.pop("first_nonfinite"))
    row["step"] = step
    files.append_metrics(row)
    if writer is not None:
      writer.write_scalars(step, {k: v for k, v in row.items() if math.isfinite(v)})
    timer.report(step, total, row["train_loss"])
    if first_nonfinite >= 0:
      return first_nonfinite
    loop["over_margin"] = loop["over_margin"] + 1 if row["train_loss"] > (
        init_loss + t.divergence_margin) else 0
    return step if loop["over_margin"] >= t.divergence_patience else None

  step = start
  with _Preemption() as preemption:
    while step < total:
      batch = run.global_batch(next(train_iter))
      log_now = step % t.log_every == 0 or step == total - 1
      state, metrics = run.train_step(state, batch, diagnose=log_now)
      timer.dispatched(step, state)
      if pending is not None:
        diverged_at = handle(*pending)
      pending = (step, metrics) if log_now else None
      step += 1
      preempted = preemption.reached(step)

      boundary = step % t.eval_every == 0 or step % t.ckpt_every == 0 or step == total
      if pending is not None and diverged_at is None and (boundary or preempted):
        diverged_at, pending = handle(*pending), None
      if diverged_at is not None:
        status = "diverged"
        break
      if step % t.eval_every == 0 and step < total:
        with timer.paused():
          files.append_eval({"step": step, "eval_loss": run.evaluate(state.params, eval_batches)})
      if step % t.ckpt_every == 0 or preempted:
        with timer.paused():
          loop["wall_s"] += time.time() - session_start
          session_start = time.time()
          ckpt.save(step, state, train_iter.get_state(), dict(loop))
      if preempted:
        status = "preempted"
        break
    if pending is not None and diverged_at is None:
      diverged_at = handle(*pending)
      status = "diverged" if diverged_at is not None else status

  if status == "running":
    status = "done"
  final_loss = None
  if status in ("done", "diverged"):
    # Not `first_nonfinite`: a loss or gradient can go non-finite while the params stay finite.
    params_finite = bool(np.isfinite(float(jax.device_get(optax.global_norm(state.params)))))
    final_loss = run.evaluate(state.params, eval_batches) if params_finite else float("nan")
    files.append_eval({"step": step, "eval_loss": final_loss})
  if status == "done" and (step % t.ckpt_every != 0):
    loop["wall_s"] += time.time() - session_start
    session_start = time.time()
    ckpt.save(step, state, train_iter.get_state(), dict(loop))
  ckpt.close()
  loop["wall_s"] += time.time() - session_start

  tokens_per_s = timer.tokens_per_s(tokens_per_step)
  peak = flops.peak_flops_per_device(jax.devices()[0].device_kind)
  summary.update(
      status=status, final_eval_loss=final_loss, diverged_at_step=diverged_at, steps=step,
      tokens=step * tokens_per_step, wall_s=loop["wall_s"], tokens_per_s=tokens_per_s,
      mfu=(tokens_per_s * flops_per_token / (peak * jax.device_count())
           if peak and tokens_per_s else None))
  files.write_summary(summary)
  if writer is not None:
    if final_loss is not None and math.isfinite(final_loss):
      writer.write_scalars(step, {"eval_loss": final_loss})
    writer.close()
  logging.info("%s: %s after %d steps, final eval loss %s", workdir, status, step, final_loss)
  return summary


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(v, (int, float, str, bool)):
      out[f"{prefix}{k}"] = v
  return out


class _Throughput:
  """Steps/s, ETA and tokens/s, excluding compilation (the first two steps) and eval/checkpoints."""

  def __init__(self):
    self.start_step = None
    self.start_time = None
    self.paused_s = 0.0
    self.last_step = None
    self._report_time = time.time()

  def dispatched(self, step: int, state) -> None:
    if self.start_step is None and step >= 1:  # both step variants are compiled by now
      jax.block_until_ready(state.step)
      self.start_step, self.start_time = step + 1, time.time()
    self.last_step = step

  @contextlib.contextmanager
  def paused(self):
    start = time.time()
    try:
      yield
    finally:
      self.paused_s += time.time() - start

  def steps_per_s(self) -> float | None:
    if self.start_step is None or self.last_step is None or self.last_step < self.start_step:
      return None
    elapsed = time.time() - self.start_time - self.paused_s
    return (self.last_step + 1 - self.start_step) / max(elapsed, 1e-9)

  def tokens_per_s(self, tokens_per_step: int) -> float | None:
    rate = self.steps_per_s()
    return rate * tokens_per_step if rate else None

  def report(self, step: int, total: int, loss: float) -> None:
    rate = self.steps_per_s()
    eta = f"{(total - step - 1) / rate / 60:.1f} min" if rate else "?"
    logging.info("step %d/%d  loss %.4f  %s steps/s  ETA %s", step, total, loss,
                 f"{rate:.2f}" if rate else "?", eta)
