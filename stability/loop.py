"""The train loop of a group: M ≥ 1 runs that one compiled program (`run.Run`) steps together.

A single run is a group of one; a batched LR sweep is M members vmapped over a member axis. Each
member keeps its own result folder, TensorBoard events, divergence verdict and summary
(`stability/members.py`); the group shares one batch stream and one checkpoint (state, data
position, every member's bookkeeping).

The host waits on the device only at log steps, and a log step's metrics are read one step late,
so the next step is already queued. Evals, checkpoints and the final summary happen at step
boundaries; SIGTERM becomes a checkpoint and a clean stop at the next one.
"""

import contextlib
import logging
import time

import jax
import numpy as np

from stability import checkpoint as checkpoint_lib
from stability import data as data_lib
from stability import flops
from stability import members as members_lib
from stability import provenance
from stability import result_format
from stability import sigterm
from stability import watchdog as watchdog_lib


class Preemption:
  """Turns SIGTERM (TPU preemption, `kill`) into a stop the loop checks between steps.

  With several processes JAX's preemption service owns SIGTERM and picks one step at which every
  process stops, so all of them take part in the same checkpoint (a per-process flag deadlocks);
  the signal is passed on to it. Either way `on_sigterm` hears of it at once (`sigterm.Listener`):
  the watchdog then ends the process if no step boundary comes within its grace period.
  """

  def __init__(self, on_sigterm=lambda: None):
    self.requested = False
    self._multihost = jax.process_count() > 1
    self._on_sigterm = on_sigterm
    self._listener = sigterm.Listener(self._heard)

  def reached(self, step: int) -> bool:
    """Whether to checkpoint and stop after `step`; call once per step on every process."""
    if self._multihost:
      from jax.experimental import multihost_utils
      self.requested = multihost_utils.reached_preemption_sync_point(step)
    return self.requested

  def _heard(self) -> None:
    logging.warning("SIGTERM: saving a checkpoint and stopping after this step")
    if not self._multihost:
      self.requested = True
    self._on_sigterm()

  def __enter__(self):
    self._listener.__enter__()
    return self

  def __exit__(self, *exc):
    self._listener.__exit__(*exc)


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


def train_group(run, group: members_lib.Group, checkpoint_dir,
                source: data_lib.Source) -> list[dict]:
  """Trains the group's members and returns their summaries.

  `run` is a `run.Run` of the M members: it inits, steps, evaluates and says which members'
  parameters are finite, each answer [M]; `run.config` is the first member's config. `source`
  is the validated data source they share.
  """
  try:
    return Training(run, group, checkpoint_dir, source).train()
  except Exception as e:
    for m in group.members:  # all but those whose verdict is on disk (finished or diverged before)
      if (m.files.read_summary() or {}).get("status") not in result_format.FINISHED:
        m.files.write_summary({**(m.files.read_summary() or {}), "status": "failed",
                               "error": f"{type(e).__name__}: {e}"[:2000]})
    raise
  finally:
    for m in group.members:
      m.close()


class Training:
  """One session of a group's training: restore or init, step, finish."""

  def __init__(self, run, group: members_lib.Group, checkpoint_dir, source: data_lib.Source):
    self.run, self.group, self.source = run, group, source
    self.config = config = run.config
    self.total = config.train.steps
    pi, pc = jax.process_index(), jax.process_count()
    self.ckpt = checkpoint_lib.Checkpointer(checkpoint_dir, keep=config.train.keep_ckpts)
    self.train_iter = data_lib.make_train_iterator(
        source, config.model.seq_len, process_index=pi, process_count=pc)
    self.eval_batches = [run.global_batch(b) for b in data_lib.make_eval_batches(
        source, config.model.seq_len, process_index=pi, process_count=pc)]
    self.timer = Throughput()
    self.progress = {"wall_s": 0.0}  # saved with each checkpoint, with the members' bookkeeping
    self.session_start = time.time()

  def final_losses(self, params) -> np.ndarray:
    """[M] eval CE; NaN where a member's parameters are not all finite (a diverged run whose
    eval could still look finite is not given a final loss)."""
    return np.where(self.run.params_finite(params), self.run.evaluate(params, self.eval_batches),
                    np.nan)

  def restore_or_init(self):
    """(state, first step): the newest checkpoint's, else a fresh init and its eval at step 0."""
    restored = self.ckpt.restore_latest(self.run.abstract_state)
    if restored is not None:
      start, state, data_state, self.progress = restored
      self.train_iter.set_state(data_state)
      self.group.restore(members_lib.saved_members(self.progress, len(self.group.members)), start,
                         self.total)
      self._continue_provenance(start)
      return state, start
    state = self.run.init_state(self.config.train.seed)
    # Members share one init, so one initial loss.
    self.progress["init_eval_loss"] = float(self.run.evaluate(state.params, self.eval_batches)[0])
    self.group.start_fresh(self.progress["init_eval_loss"])
    self._continue_provenance(0)
    return state, 0

  def _continue_provenance(self, start: int) -> None:
    """Adds this session's software and data to the group's provenance if they are new, with a
    warning when a resume changed them."""
    history = self.progress.get("provenance", [])
    current = provenance.record(self.source, self.run.compiler_options)
    changes = provenance.differences(history[-1], current) if history else []
    if changes:
      logging.warning("resuming at step %d with other software or data than the steps before: %s",
                      start, "; ".join(changes))
    elif not history and start > 0:
      logging.info("the steps before %d left no provenance record (an older checkpoint)", start)
    self.progress["provenance"] = provenance.continued(history, start, current)

  def save(self, step: int, state) -> None:
    now = time.time()
    self.progress["wall_s"] += now - self.session_start
    self.session_start = now
    self.ckpt.save(step, state, self.train_iter.get_state(),
                   {**self.progress, "members": self.group.bookkeeping()})

  def train(self) -> list[dict]:
    limits = watchdog_lib.Limits.from_env(jax.process_count())
    process = f"process {jax.process_index()} of {jax.process_count()}"
    with (watchdog_lib.Watchdog(limits, self.group.interrupt, process) as self.watchdog,
          Preemption(self.watchdog.sigterm) as preemption):
      state, start = self.restore_or_init()
      self.group.begin(start, self.progress["init_eval_loss"], self.progress["provenance"])
      state, step, preempted = self.steps(state, start, preemption)
      self.watchdog.beat(f"the final checkpoint and eval after step {step}")
      return self.finish(state, start, step, preempted)

  def steps(self, state, step: int, preemption: Preemption):
    """Steps until train.steps, a preemption or no member running: (state, step, preempted)."""
    t = self.config.train
    # A log step's row ((step, [M] metrics)) is read one step late, the next step queued by then;
    # at a boundary it is read at once, so that its eval and checkpoint see every verdict.
    deferred = None
    while step < self.total and self.group.running:
      log_now = step % t.log_every == 0 or step == self.total - 1
      batch = self.run.global_batch(next(self.train_iter))
      state, metrics_M = self.run.train_step(state, batch, diagnose=log_now)
      self.timer.dispatched(step, state)
      row = (step, metrics_M) if log_now else None
      step += 1
      preempted = preemption.reached(step)
      boundary = step % t.eval_every == 0 or step % t.ckpt_every == 0 or step == self.total
      due, deferred = ([deferred, row], None) if boundary or preempted else ([deferred], row)
      self.handle(due, state, step)
      if not self.group.running:  # every log row is handled, or no member is left to record it
        break
      if preempted:
        self.watchdog.stopping(f"the checkpoint of step {step}, to stop at")
      elif step >= 2:  # start-up's limit covers compiling both step programs
        self.watchdog.beat(f"the evals, checkpoint and steps after step {step}")
      self.at_boundary(step, state, preempted)
      if preempted:
        return state, step, True
    return state, step, False

  def handle(self, rows, state, steps_done: int) -> None:
    """Records the log rows (None: no row), in order; evaluates the members they find diverged
    (their final loss: the `steps_done` updates in `state`)."""
    for step, metrics_M in filter(None, rows):
      host_M = jax.device_get(metrics_M)
      diverged = self.group.record(step, host_M, self.progress["init_eval_loss"])
      if diverged:
        with self.timer.paused():
          self.group.finish_diverged(diverged, steps_done, self.final_losses(state.params))
      if self.group.running:
        loss = min(float(host_M["train_loss"][m.index]) for m in self.group.running)
        self.timer.report(step, self.total, loss)

  def at_boundary(self, step: int, state, preempted: bool) -> None:
    """The eval and the checkpoint due after `step` (a checkpoint at every preemption)."""
    t = self.config.train
    if step % t.eval_every == 0 and step < self.total:
      with self.timer.paused():
        self.group.append_evals(step, self.run.evaluate(state.params, self.eval_batches))
    if step % t.ckpt_every == 0 or preempted:
      with self.timer.paused():
        self.save(step, state)

  def finish(self, state, start: int, step: int, preempted: bool) -> list[dict]:
    """Final statuses and losses, then every member's summary with the session's timings."""
    self.timer.stop(state)
    tokens_per_s = self.timer.tokens_per_s(self.group.tokens_per_step)  # of each member
    live = self.group.running
    if preempted:
      for m in live:
        m.status = "preempted"
    elif live:
      if step % self.config.train.ckpt_every != 0 and step > start:
        # Members still running in it: a kill before the summaries redoes the final eval.
        self.save(step, state)
      self.group.finish_done(step, self.final_losses(state.params))
    self.ckpt.close()
    self.progress["wall_s"] += time.time() - self.session_start
    peak = flops.peak_flops_per_device(jax.devices()[0].device_kind)
    mfu = (len(self.group.members) * tokens_per_s * self.group.shared["flops_per_token"]
           / (peak * jax.device_count()) if peak and tokens_per_s else None)
    return self.group.write_summaries(step, wall_s=self.progress["wall_s"],
                                      tokens_per_s=tokens_per_s, mfu=mfu)
