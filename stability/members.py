"""The record of a group's members: each run's result folder, TensorBoard events, divergence
verdict and summary (`Member`), and what the members of one compiled program share (`Group`).

The train loop (`stability/loop.py`) steps the group and hands each log row, eval and final loss
here; nothing here touches the device.
"""

import functools
import logging
import math

import jax
import ml_collections
import numpy as np

from stability import flops
from stability import result_format
from stability import run_files
from stability import validation


def finished_summary(config: ml_collections.ConfigDict, workdir) -> dict | None:
  """The summary of a finished run of `config` in `workdir`, else None (nothing or unfinished).

  Raises ConfigError, touching nothing, if the workdir holds a run of another config.
  """
  files = run_files.RunFiles(workdir, writer=False)
  if not files.dir.exists():
    return None
  validation.check_same_run(files.dir, files.existing_config(), result_format.config_json(config))
  summary = files.read_summary()
  return summary if summary and summary.get("status") in result_format.FINISHED else None


@functools.cache
def _warn_once(message: str) -> None:
  logging.warning("%s", message)


def _tensorboard_writer(workdir):
  """clu's TensorBoard event writer, written from a background thread (no console echo of
  every scalar: the loop logs progress), or None when TensorFlow/clu are absent."""
  try:
    from clu import metric_writers  # imports TensorFlow
  except ImportError as e:
    _warn_once(f"no TensorBoard events ({e}; `pip install -e .[tf]` adds them); results are in "
               "the JSON-lines files")
    return None
  return metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(workdir)))


class Member:
  """One run of a group: its result folder, TensorBoard events and divergence verdict."""

  def __init__(self, index: int, config: ml_collections.ConfigDict, workdir, *, is_writer: bool):
    self.index = index
    self.config = config
    self.config_json = result_format.config_json(config)  # as its config.json holds it
    self.files = run_files.RunFiles(workdir, writer=is_writer)
    self.files.write_config(self.config_json)
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


def saved_members(progress: dict, k: int) -> list[dict]:
  if "members" in progress:
    return progress["members"]
  # A single run's checkpoint from before groups: its one member was running.
  return [{"status": "running", "diverged_at": None, "over": progress.pop("over_margin", 0),
           "final_loss": None, "final_step": None}] * k


class Group:
  """The members trained together: their log rows, divergence verdicts and summaries."""

  def __init__(self, run, configs, workdirs, *, is_writer: bool):
    """`run`: the `run.Run` built for `configs`, one member each, written to `workdirs` by the
    process that `is_writer`."""
    self.members = [Member(i, c, w, is_writer=is_writer)
                    for i, (c, w) in enumerate(zip(configs, workdirs))]
    self.tokens_per_step = run.config.data.batch_size * run.config.model.seq_len
    self.trained: list[Member] = []  # this session's; the others finished earlier
    m = run.model_cfg  # the architecture the run was built with
    self.shared = {  # the summary fields every member shares (init_eval_loss: `begin`)
        "num_params": flops.non_embedding_params(m.d_model, m.num_layers, m.mlp_ratio),
        "vocab_size": m.vocab_size,
        "head_impl": m.head_impl,  # what config's `auto` resolved to
        "flops_per_token": flops.model_flops_per_token(m, m.vocab_size),
        "num_devices": jax.device_count(), "device_kind": jax.devices()[0].device_kind,
        "batched_members": len(self.members)}

  @property
  def running(self) -> list[Member]:
    return [m for m in self.members if m.running]

  def bookkeeping(self) -> list[dict]:
    return [m.bookkeeping() for m in self.members]

  def restore(self, saved: list[dict], start: int, total: int) -> None:
    for m, bookkeeping in zip(self.members, saved):
      m.restore(bookkeeping)
      if m.running:  # the eval row of step `total` is the final one, written after the loop
        m.files.truncate(metrics_before=start, evals_through=min(start, total - 1))
    logging.info("resumed %s from step %d", ", ".join(str(m.files.dir) for m in self.members),
                 start)

  def start_fresh(self, init_loss: float) -> None:
    for m in self.members:  # rows of an earlier attempt that left no checkpoint
      m.files.truncate(metrics_before=0, evals_through=-1)
      m.files.append_eval({"step": 0, "eval_loss": init_loss})

  def begin(self, start: int, init_loss: float, history: list[dict]) -> None:
    """Opens the running members' event files and writes their `running` summaries
    (`history`: the group's provenance, `stability.provenance`)."""
    self.shared["init_eval_loss"] = init_loss
    self.shared["provenance"] = history
    self.trained = self.running
    for m in self.trained:
      m.open_tensorboard()
      if start == 0 and m.tensorboard is not None:
        m.tensorboard.write_hparams(result_format.flatten(m.config_json))
      m.files.write_summary(self.summary_of(m, start))

  def summary_of(self, m: Member, steps: int, **extra) -> dict:
    return {"name": m.files.dir.name, "status": m.status, "final_eval_loss": m.final_loss,
            "diverged_at_step": m.diverged_at, "steps": steps,
            "tokens": steps * self.tokens_per_step, **self.shared, **extra}

  def record(self, step: int, metrics_M: dict, init_loss: float) -> list[Member]:
    """Writes the log row of `step` ({metric: [M]}) of every running member; returns the
    members it finds diverged."""
    running = self.running
    for m in running:
      m.record(step, {k: float(v[m.index]) for k, v in metrics_M.items()}, init_loss)
    return [m for m in running if not m.running]

  def append_evals(self, step: int, losses_M: np.ndarray) -> None:
    for m in self.running:
      m.files.append_eval({"step": step, "eval_loss": float(losses_M[m.index])})

  def finish_diverged(self, members: list[Member], steps: int, losses_M: np.ndarray) -> None:
    """Final losses (after `steps` updates) and summaries of members that just diverged."""
    for m in members:
      m.finish(steps, float(losses_M[m.index]))
      m.files.write_summary(self.summary_of(m, steps))

  def finish_done(self, steps: int, losses_M: np.ndarray) -> None:
    """Final losses of the members that trained to the end; `write_summaries` records them."""
    for m in self.running:
      m.status = "done"
      m.finish(steps, float(losses_M[m.index]))

  def interrupt(self, message: str) -> None:
    """Marks the members still running as interrupted (the watchdog stops the process; a rerun
    resumes them from the last checkpoint). A failed one keeps its error."""
    for m in self.members:
      summary = m.files.read_summary() or {}
      if summary.get("status", "running") == "running":
        m.files.write_summary({**summary, "status": "interrupted", "error": message})

  def write_summaries(self, steps: int, **extra) -> list[dict]:
    """The final summaries: rewritten for this session's members, read for the others."""
    out = []
    for m in self.members:
      summary = m.files.read_summary() or {}
      if m in self.trained:
        summary = self.summary_of(
            m, m.final_step if m.final_step is not None else steps, **extra)
        m.files.write_summary(summary)
      out.append(summary)
      logging.info("%s: %s after %s steps, final eval loss %s", m.files.dir, m.status,
                   summary.get("steps"), m.final_loss)
    return out
