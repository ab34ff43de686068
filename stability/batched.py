"""K runs that differ only in scalar optimizer hyper-parameters, trained as one program.

A learning-rate sweep repeats one architecture and one batch stream K times. Here the parameters
and optimizer state carry a leading run axis, the train step is `jax.vmap`-ed over it with each
member's hyper-parameters (peak LR, ε, weight decay, ...) as traced scalars, and every member
keeps its own result folder, diagnostics, divergence status and summary: a diverged member's
NaNs stay in its own slice and the others train on undisturbed. One compile serves the whole
sweep, and small models fill the machine better.

The members' folders are exactly those `train.train_and_evaluate` would write; the shared
checkpoint lives in `<first member's parent>/.batched/<group>/`.
"""

import functools
import hashlib
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from stability import checkpoint as checkpoint_lib
from stability import data as data_lib
from stability import flops
from stability import logs
from stability import optim
from stability import results
from stability import sharding
from stability import step as step_lib
from stability import train
from stability import validation


def batchable_key(config) -> str:
  """Configs with equal keys differ only in SCALAR_HYPERS and can train as one program."""
  d = train._jsonable_config(config)
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

  def init_state(self, seed: int):
    with self.single.context():
      return self._init(jax.random.PRNGKey(seed))

  def train_step(self, state, batch, diagnose: bool):
    with self.single.context():
      return (self._diagnose_step if diagnose else self._train_step)(state, batch, self.hypers)

  def evaluate(self, params, eval_batches) -> np.ndarray:
    """[K] mean eval CE of every member."""
    with self.single.context():
      losses = [self._eval_step(params, b) for b in eval_batches]
    return np.mean(np.stack(jax.device_get(losses)), axis=0)


class _Member:
  """One member's result folder and divergence bookkeeping."""

  def __init__(self, index: int, config, workdir: str, writer: bool):
    self.index = index
    self.config = config
    self.files = results.RunFiles(workdir, writer=writer)
    self.status = "running"
    self.diverged_at = None
    self.over_margin = 0
    self.final_loss = None

  def handle(self, step: int, row: dict, init_loss: float) -> None:
    first_nonfinite = int(row.pop("first_nonfinite"))
    row["step"] = step
    self.files.append_metrics(row)
    t = self.config.train
    if first_nonfinite >= 0:
      self.diverged_at = first_nonfinite
    else:
      self.over_margin = self.over_margin + 1 if row["train_loss"] > (
          init_loss + t.divergence_margin) else 0
      if self.over_margin >= t.divergence_patience:
        self.diverged_at = step
    if self.diverged_at is not None:
      self.status = "diverged"


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
  for c, w in zip(configs, workdirs):
    files = results.RunFiles(w, writer=False)
    if files.dir.exists():
      train._check_workdir_config(files, train._jsonable_config(c))
  previous = [results.RunFiles(w, writer=False).read_summary() for w in workdirs]
  if all(p and p.get("status") in train.FINISHED for p in previous):
    return previous

  vocab_size = train.resolve_vocab_size(cfg)
  run = BatchedRun(configs, vocab_size)
  is_writer = jax.process_index() == 0
  members = [_Member(i, c, w, is_writer) for i, (c, w) in enumerate(zip(configs, workdirs))]
  for m in members:
    m.files.write_config(train._jsonable_config(m.config))
  try:
    return _loop(cfg, run, members, group_dir(workdirs))
  except Exception as e:
    for m in members:
      if m.status == "running":
        m.files.write_summary({**(m.files.read_summary() or {}), "status": "failed",
                               "error": f"{type(e).__name__}: {e}"[:2000]})
    raise


def _loop(cfg, run: BatchedRun, members: list[_Member], group: str) -> list[dict]:
  t = cfg.train
  seq_len = cfg.model.seq_len
  total = t.steps
  tokens_per_step = cfg.data.batch_size * seq_len
  pi, pc = jax.process_index(), jax.process_count()
  ckpt = checkpoint_lib.Checkpointer(results.epath.Path(group) / "checkpoints", keep=t.keep_ckpts)
  train_iter = data_lib.make_train_iterator(cfg.data, seq_len, process_index=pi, process_count=pc)
  eval_batches = [run.single.global_batch(b) for b in data_lib.make_eval_batches(
      cfg.data, seq_len, process_index=pi, process_count=pc)]

  restored = ckpt.restore_latest(run.abstract_state)
  if restored is not None:
    start, state, data_state, loop = restored
    train_iter.set_state(data_state)
    for m, saved in zip(members, loop["members"]):
      m.status, m.diverged_at, m.over_margin = saved["status"], saved["diverged_at"], saved["over"]
      m.final_loss = saved["final_loss"]
      if m.status == "running":
        m.files.truncate(metrics_before=start, evals_through=min(start, total - 1))
    init_loss = loop["init_eval_loss"]
  else:
    start, loop = 0, {"wall_s": 0.0}
    for m in members:  # rows of an earlier attempt that left no checkpoint here
      m.files.truncate(metrics_before=0, evals_through=-1)
    state = run.init_state(t.seed)
    init_losses = run.evaluate(state.params, eval_batches)
    init_loss = loop["init_eval_loss"] = float(init_losses[0])  # identical inits
    for m in members:
      m.files.append_eval({"step": 0, "eval_loss": init_loss})

  flops_per_token = flops.model_flops_per_token(cfg.model, run.single.model_cfg.vocab_size)
  common = {"init_eval_loss": init_loss, "num_params": flops.non_embedding_params(
      cfg.model.d_model, cfg.model.num_layers, cfg.model.mlp_ratio),
      "vocab_size": run.single.model_cfg.vocab_size, "flops_per_token": flops_per_token,
      "num_devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
      "batched_members": run.k}

  def summary_of(m: _Member, step: int, **extra) -> dict:
    return {"name": m.files.dir.name, "status": m.status, "final_eval_loss": m.final_loss,
            "diverged_at_step": m.diverged_at, "steps": step, "tokens": step * tokens_per_step,
            **common, **extra}

  for m in members:
    if m.status == "running":
      m.files.write_summary(summary_of(m, start))

  def loop_state() -> dict:
    return {**loop, "members": [
        {"status": m.status, "diverged_at": m.diverged_at, "over": m.over_margin,
         "final_loss": m.final_loss} for m in members]}

  timer = train._Throughput()
  session_start = time.time()
  pending = None

  def handle(step: int, metrics) -> None:
    host = jax.device_get(metrics)
    running = [m for m in members if m.status == "running"]
    for m in running:
      m.handle(step, {k: float(v[m.index]) for k, v in host.items()}, init_loss)
    newly_diverged = [m for m in running if m.status == "diverged"]
    if newly_diverged:
      losses = run.evaluate(state.params, eval_batches)
      for m in newly_diverged:
        m.final_loss = float(losses[m.index])
        m.files.append_eval({"step": step + 1, "eval_loss": m.final_loss})
        m.files.write_summary(summary_of(m, step + 1))
    live = [m for m in members if m.status == "running"]
    if live:
      timer.report(step, total, float(np.nanmin(host["train_loss"][[m.index for m in live]])))

  step = start
  with train._Preemption() as preemption:
    while step < total and any(m.status == "running" for m in members):
      batch = run.single.global_batch(next(train_iter))
      log_now = step % t.log_every == 0 or step == total - 1
      state, metrics = run.train_step(state, batch, diagnose=log_now)
      timer.dispatched(step, state)
      if pending is not None:
        handle(*pending)
      pending = (step, metrics) if log_now else None
      step += 1
      preempted = preemption.reached(step)
      boundary = step % t.eval_every == 0 or step % t.ckpt_every == 0 or step == total
      if pending is not None and (boundary or preempted):
        handle(*pending)
        pending = None
      if step % t.eval_every == 0 and step < total:
        with timer.paused():
          losses = run.evaluate(state.params, eval_batches)
          for m in members:
            if m.status == "running":
              m.files.append_eval({"step": step, "eval_loss": float(losses[m.index])})
      if step % t.ckpt_every == 0 or preempted:
        with timer.paused():
          loop["wall_s"] += time.time() - session_start
          session_start = time.time()
          ckpt.save(step, state, train_iter.get_state(), loop_state())
      if preempted:
        for m in members:
          if m.status == "running":
            m.status = "preempted"
        break
    if pending is not None:
      handle(*pending)

  live = [m for m in members if m.status == "running"]
  if live:
    losses = run.evaluate(state.params, eval_batches)
    for m in live:
      m.status = "done"
      m.final_loss = float(losses[m.index])
      m.files.append_eval({"step": step, "eval_loss": m.final_loss})
  if live and step % t.ckpt_every != 0:
    ckpt.save(step, state, train_iter.get_state(), loop_state())
  ckpt.close()
  loop["wall_s"] += time.time() - session_start

  member_tokens_per_s = timer.tokens_per_s(tokens_per_step)
  peak = flops.peak_flops_per_device(jax.devices()[0].device_kind)
  out = []
  for m in members:
    summary = m.files.read_summary() or {}
    if m in live or m.status == "preempted":
      summary = summary_of(
          m, step, wall_s=loop["wall_s"], tokens_per_s=member_tokens_per_s,
          mfu=(run.k * member_tokens_per_s * flops_per_token / (peak * jax.device_count())
               if peak and member_tokens_per_s else None))
      m.files.write_summary(summary)
    out.append(summary)
  logging.info("batched %d members: %s", run.k, ", ".join(m.status for m in members))
  return out

