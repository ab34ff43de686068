"""The train loop, shared by a single run and a batched LR sweep.

A group is K ≥ 1 runs that one compiled program steps together: `train.Run` (K = 1) or
`batched.BatchedRun` (K members vmapped over a run axis). The loop is written once, here. Each
member keeps its own result folder, TensorBoard events, divergence verdict and summary; the group
shares one batch stream and one checkpoint (state, data position, every member's bookkeeping).

The host waits on the device only at log steps, and a log step's metrics are read one step late,
so the next step is already queued. Evals, checkpoints and the final summary happen at step
boundaries; SIGTERM becomes a checkpoint and a clean stop at the next one.
"""

import contextlib
import json
import logging
import math
import signal
import time

import jax
import ml_collections
import numpy as np

from stability import checkpoint as checkpoint_lib
from stability import data as data_lib
from stability import flops
from stability import results
from stability import validation

def config_dict(config: ml_collections.ConfigDict) -> dict:
  """The config as config.json holds it."""
  return json.loads(json.dumps(config.to_dict()))


def finished_summary(config: ml_collections.ConfigDict, workdir) -> dict | None:
  """The summary of a finished run of `config` in `workdir`, else None (nothing or unfinished).

  Raises ConfigError, touching nothing, if the workdir holds a run of another config.
  """
  files = results.RunFiles(workdir, writer=False)
  if not files.dir.exists():
    return None
  existing, wanted = files.existing_config(), config_dict(config)
  if existing is not None and existing != wanted:
    changed = sorted(
        f"{g}.{k}" for g in set(existing) | set(wanted)
        for k in set(existing.get(g, {}) or {}) | set(wanted.get(g, {}) or {})
        if (existing.get(g) or {}).get(k) != (wanted.get(g) or {}).get(k))
    raise validation.ConfigError(
        f"workdir {files.dir} holds a run with a different config (differs in: "
        f"{', '.join(changed) or 'structure'}); use a new --workdir, or delete that one")
  summary = files.read_summary()
  return summary if summary and summary.get("status") in results.FINISHED else None


def _tensorboard_writer(workdir):
  """clu's TensorBoard event writer, written from a background thread (no console echo of
  every scalar: the loop logs progress), or None when TensorFlow/clu are absent."""
  try:
    from clu import metric_writers  # imports TensorFlow
  except ImportError as e:
    logging.warning("no TensorBoard events (%s); results are in the JSON-lines files", e)
    return None
  return metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(workdir)))


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(v, (int, float, str, bool)):
      out[f"{prefix}{k}"] = v
  return out


class Member:
  """One run of a group: its result folder, TensorBoard events and divergence verdict."""

  def __init__(self, index: int, config: ml_collections.ConfigDict, workdir, *, is_writer: bool):
    self.index = index
    self.config = config
    self.files = results.RunFiles(workdir, writer=is_writer)
    self.files.write_config(config_dict(config))
    self.tensorboard = None  # opened by `open_tensorboard` once the member is to be trained
    self.status = "running"
    self.diverged_at = None
    self.over_margin = 0  # log rows in a row above ℓ0 + margin
    self.final_loss = None
    self.final_step = None  # the updates behind final_loss

  @property
  def running(self) -> bool:
    return self.status == "running"

  def open_tensorboard(self) -> None:
    if self.files.writer and self.tensorboard is None:
      self.tensorboard = _tensorboard_writer(self.files.dir)

  def bookkeeping(self) -> dict:
    return {"status": self.status, "diverged_at": self.diverged_at, "over": self.over_margin,
            "final_loss": self.final_loss, "final_step": self.final_step}

  def restore(self, saved: dict) -> None:
    self.status, self.diverged_at = saved["status"], saved["diverged_at"]
    self.over_margin, self.final_loss = saved["over"], saved["final_loss"]
    self.final_step = saved.get("final_step")

  def record(self, step: int, row: dict, init_loss: float) -> None:
    """Writes the log row of `step`; diverged at the first non-finite step, or after
    `divergence_patience` rows in a row with train loss above ℓ0 + `divergence_margin`."""
    first_nonfinite = int(row.pop("first_nonfinite"))
    self.files.append_metrics({**row, "step": step})
    if self.tensorboard is not None:
      self.tensorboard.write_scalars(step, {k: v for k, v in row.items() if math.isfinite(v)})
    t = self.config.train
    if first_nonfinite >= 0:
      self.diverged_at = first_nonfinite
    else:
      over = row["train_loss"] > init_loss + t.divergence_margin
      self.over_margin = self.over_margin + 1 if over else 0
      if self.over_margin >= t.divergence_patience:
        self.diverged_at = step
    if self.diverged_at is not None:
      self.status = "diverged"
      logging.info("%s diverged at step %d", self.files.dir.name, self.diverged_at)

  def finish(self, step: int, eval_loss: float) -> None:
    self.final_loss, self.final_step = eval_loss, step
    self.files.append_eval({"step": step, "eval_loss": eval_loss})
    if self.tensorboard is not None and math.isfinite(eval_loss):
      self.tensorboard.write_scalars(step, {"eval_loss": eval_loss})

  def close(self) -> None:
    if self.tensorboard is not None:
      self.tensorboard.close()
      self.tensorboard = None


class Preemption:
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


class Throughput:
  """Steps/s, ETA and tokens/s of the steps, excluding compilation (the first two steps) and the
  evals and checkpoints in between; `stop` waits for the last step and ends the clock."""

  def __init__(self):
    self.start_step = None
    self.start_time = None
    self.stop_time = None
    self.paused_s = 0.0
    self.last_step = None

  def dispatched(self, step: int, state) -> None:
    if self.start_step is None and step >= 1:  # both step variants are compiled by now
      jax.block_until_ready(state.step)
      self.start_step, self.start_time = step + 1, time.time()
    self.last_step = step

  def stop(self, state) -> None:
    jax.block_until_ready(state.step)
    self.stop_time = time.time()

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
    elapsed = (self.stop_time or time.time()) - self.start_time - self.paused_s
    return (self.last_step + 1 - self.start_step) / max(elapsed, 1e-9)

  def tokens_per_s(self, tokens_per_step: int) -> float | None:
    rate = self.steps_per_s()
    return rate * tokens_per_step if rate else None

  def report(self, step: int, total: int, loss: float) -> None:
    rate = self.steps_per_s()
    eta = f"{(total - step - 1) / rate / 60:.1f} min" if rate else "?"
    logging.info("step %d/%d  loss %.4f  %s steps/s  ETA %s", step, total, loss,
                 f"{rate:.2f}" if rate else "?", eta)


def _saved_members(loop: dict, k: int) -> list[dict]:
  if "members" in loop:
    return loop["members"]
  # A single run's checkpoint from before groups: its one member was running.
  return [{"status": "running", "diverged_at": None, "over": loop.pop("over_margin", 0),
           "final_loss": None, "final_step": None}] * k


def train_group(config, run, members: list[Member], checkpoint_dir) -> list[dict]:
  """Trains the members (`config` is the first one's) and returns their summaries.

  `run` is a `train.Run` (one member) or a `batched.BatchedRun`: it inits, steps, evaluates
  (one loss per member) and says which members' parameters are finite.
  """
  try:
    return _train(config, run, members, checkpoint_dir)
  except Exception as e:
    for m in members:  # all but those whose verdict is on disk (finished or diverged before)
      if (m.files.read_summary() or {}).get("status") not in results.FINISHED:
        m.files.write_summary({**(m.files.read_summary() or {}), "status": "failed",
                               "error": f"{type(e).__name__}: {e}"[:2000]})
    raise
  finally:
    for m in members:
      m.close()


def _train(config, run, members: list[Member], checkpoint_dir) -> list[dict]:
  t = config.train
  seq_len = config.model.seq_len
  total = t.steps
  tokens_per_step = config.data.batch_size * seq_len
  pi, pc = jax.process_index(), jax.process_count()
  ckpt = checkpoint_lib.Checkpointer(checkpoint_dir, keep=t.keep_ckpts)
  train_iter = data_lib.make_train_iterator(config.data, seq_len, process_index=pi,
                                            process_count=pc)
  eval_batches = [run.global_batch(b) for b in data_lib.make_eval_batches(
      config.data, seq_len, process_index=pi, process_count=pc)]

  def eval_losses(params) -> np.ndarray:
    """[K] eval CE of each member."""
    return np.reshape(run.evaluate(params, eval_batches), (-1,))

  def final_losses(params) -> np.ndarray:
    """[K] eval CE; NaN where a member's parameters are not all finite (a diverged run whose
    eval could still look finite is not given a final loss)."""
    return np.where(np.reshape(run.params_finite(params), (-1,)), eval_losses(params), np.nan)

  restored = ckpt.restore_latest(run.abstract_state)
  if restored is not None:
    start, state, data_state, loop = restored
    train_iter.set_state(data_state)
    for m, saved in zip(members, _saved_members(loop, len(members))):
      m.restore(saved)
      if m.running:  # the eval row of step `total` is the final one, written after the loop
        m.files.truncate(metrics_before=start, evals_through=min(start, total - 1))
    logging.info("resumed %s from step %d", ", ".join(str(m.files.dir) for m in members), start)
  else:
    start, loop = 0, {"wall_s": 0.0}
    state = run.init_state(t.seed)
    loop["init_eval_loss"] = float(eval_losses(state.params)[0])  # members share one init
    for m in members:  # rows of an earlier attempt that left no checkpoint
      m.files.truncate(metrics_before=0, evals_through=-1)
      m.files.append_eval({"step": 0, "eval_loss": loop["init_eval_loss"]})
  init_loss = loop["init_eval_loss"]

  flops_per_token = flops.model_flops_per_token(config.model, run.model_cfg.vocab_size)
  shared = {
      "init_eval_loss": init_loss,
      "num_params": flops.non_embedding_params(config.model.d_model, config.model.num_layers,
                                               config.model.mlp_ratio),
      "vocab_size": run.model_cfg.vocab_size, "flops_per_token": flops_per_token,
      "num_devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
      "batched_members": len(members)}

  def summary_of(m: Member, steps: int, **extra) -> dict:
    return {"name": m.files.dir.name, "status": m.status, "final_eval_loss": m.final_loss,
            "diverged_at_step": m.diverged_at, "steps": steps, "tokens": steps * tokens_per_step,
            **shared, **extra}

  trained = [m for m in members if m.running]  # this session's; the others finished earlier
  for m in trained:
    m.open_tensorboard()
    if start == 0 and m.tensorboard is not None:
      m.tensorboard.write_hparams(_flatten(config_dict(m.config)))
    m.files.write_summary(summary_of(m, start))

  def save(step: int, state) -> None:
    nonlocal session_start
    loop["wall_s"] += time.time() - session_start
    session_start = time.time()
    ckpt.save(step, state, train_iter.get_state(),
              {**loop, "members": [m.bookkeeping() for m in members]})

  def handle(step: int, metrics, state, steps_done: int) -> None:
    """Records the log row of `step`; evaluates the members it finds diverged (their final
    loss, at `steps_done`, the updates in `state`)."""
    host = {k: np.reshape(v, (-1,)) for k, v in jax.device_get(metrics).items()}
    running = [m for m in members if m.running]
    for m in running:
      m.record(step, {k: float(v[m.index]) for k, v in host.items()}, init_loss)
    newly_diverged = [m for m in running if not m.running]
    if newly_diverged:
      with timer.paused():
        losses = final_losses(state.params)
      for m in newly_diverged:
        m.finish(steps_done, float(losses[m.index]))
        m.files.write_summary(summary_of(m, steps_done))
    still = [m for m in running if m.running]
    if still:
      timer.report(step, total, min(float(host["train_loss"][m.index]) for m in still))

  timer = Throughput()
  session_start = time.time()
  pending = None  # (step, metrics) of the last log step, read one step late
  step = start
  preempted = False
  with Preemption() as preemption:
    while step < total and any(m.running for m in members):
      batch = run.global_batch(next(train_iter))
      log_now = step % t.log_every == 0 or step == total - 1
      state, metrics = run.train_step(state, batch, diagnose=log_now)
      timer.dispatched(step, state)
      if pending is not None:
        handle(*pending, state, step + 1)
      pending = (step, metrics) if log_now else None
      step += 1
      preempted = preemption.reached(step)
      boundary = step % t.eval_every == 0 or step % t.ckpt_every == 0 or step == total
      if pending is not None and (boundary or preempted):
        handle(*pending, state, step)
        pending = None
      if not any(m.running for m in members):
        break
      if step % t.eval_every == 0 and step < total:
        with timer.paused():
          losses = eval_losses(state.params)
          for m in members:
            if m.running:
              m.files.append_eval({"step": step, "eval_loss": float(losses[m.index])})
      if step % t.ckpt_every == 0 or preempted:
        with timer.paused():
          save(step, state)
      if preempted:
        break
  # Every log row is handled by now: at step == total and at a preemption (boundaries), or the
  # loop ended because no member is running.
  timer.stop(state)
  tokens_per_s = timer.tokens_per_s(tokens_per_step)  # of each member

  live = [m for m in members if m.running]
  if preempted:
    for m in live:
      m.status = "preempted"
  elif live:
    if step % t.ckpt_every != 0 and step > start:
      save(step, state)  # members still running in it: a kill before the summaries redoes the eval
    losses = final_losses(state.params)
    for m in live:
      m.status = "done"
      m.finish(step, float(losses[m.index]))
  ckpt.close()
  loop["wall_s"] += time.time() - session_start

  peak = flops.peak_flops_per_device(jax.devices()[0].device_kind)
  mfu = (len(members) * tokens_per_s * flops_per_token / (peak * jax.device_count())
         if peak and tokens_per_s else None)
  out = []
  for m in members:
    summary = m.files.read_summary() or {}
    if m in trained:
      summary = summary_of(m, m.final_step if m.final_step is not None else step,
                           wall_s=loop["wall_s"], tokens_per_s=tokens_per_s, mfu=mfu)
      m.files.write_summary(summary)
    out.append(summary)
    logging.info("%s: %s after %s steps, final eval loss %s", m.files.dir, m.status,
                 summary.get("steps"), m.final_loss)
  return out
