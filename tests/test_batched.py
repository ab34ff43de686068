"""A batched LR sweep (one vmapped program) equals the separate runs, member by member."""

import json
import os

import pytest

from configs import base
from stability import train
from stability.validation import ConfigError

LRS = (1e-3, 3e-2, 1e4)  # the last one diverges

pytestmark = pytest.mark.slow  # every test here trains


def tiny(lr: float, tmp_cache: str, **kw):
  c = base.get_config(f"size=d64-L2,lr={lr},data=synthetic")
  c.data.synthetic.vocab_size = 259
  c.model.seq_len = 16
  c.model.dtype = "float32"
  c.data.batch_size = 4
  c.data.eval_batches = 2
  c.data.embedded.cache_dir = tmp_cache
  c.train.steps = 12
  c.opt.warmup_steps = 2
  c.train.log_every = 1
  c.train.eval_every = 6
  c.train.ckpt_every = 6
  c.loss.z_loss = 0.0 if lr > 1 else 1e-4
  for k, v in kw.items():
    group, field = k.split(".")
    c[group][field] = v
  return c


def rows(workdir, name):
  with open(os.path.join(workdir, name)) as f:
    return [json.loads(line) for line in f]


def summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def test_batched_equals_separate_runs(tmp_path):
  """float32; vmap batches the matmuls, so sums run in another order: rtol 1e-5 on the loss."""
  cache = str(tmp_path / "cache")
  configs = [tiny(lr, cache, **{"loss.z_loss": 1e-4}) for lr in LRS]
  separate = [str(tmp_path / f"separate_{i}") for i in range(len(LRS))]
  together = [str(tmp_path / "sweep" / f"member_{i}") for i in range(len(LRS))]
  for c, w in zip(configs, separate):
    train.train_and_evaluate(c, w)
  summaries = train.train_batched(configs, together)

  for lr, s_dir, b_dir, b_summary in zip(LRS, separate, together, summaries):
    s_rows, b_rows = rows(s_dir, "metrics.jsonl"), rows(b_dir, "metrics.jsonl")
    assert [r["step"] for r in s_rows] == [r["step"] for r in b_rows], lr
    for s, b in zip(s_rows, b_rows):
      for key in ("train_loss", "grad_norm", "attn_logit_max/block_0", "update_rms"):
        if s[key] == s[key]:  # not NaN
          assert b[key] == pytest.approx(s[key], rel=1e-5, abs=1e-6), (lr, s["step"], key)
    s_sum = summary(s_dir)
    assert b_summary["status"] == s_sum["status"]
    assert b_summary["diverged_at_step"] == s_sum["diverged_at_step"]
    assert b_summary["steps"] == s_sum["steps"]  # a diverged member's final eval at the same step
    s_evals, b_evals = rows(s_dir, "eval.jsonl"), rows(b_dir, "eval.jsonl")
    assert [r["step"] for r in b_evals] == [r["step"] for r in s_evals], lr
    for s, b in zip(s_evals, b_evals):
      if s["eval_loss"] == s["eval_loss"]:
        assert b["eval_loss"] == pytest.approx(s["eval_loss"], rel=1e-5), (lr, s["step"])
    assert b_summary["init_eval_loss"] == pytest.approx(s_sum["init_eval_loss"], rel=1e-6)
    if s_sum["status"] == "done":
      assert b_summary["final_eval_loss"] == pytest.approx(s_sum["final_eval_loss"], rel=1e-5)
      assert b_summary["batched_members"] == len(LRS)
  statuses = [s["status"] for s in summaries]
  assert statuses == ["done", "done", "diverged"], statuses  # a diverged member harms no other


def test_batched_rerun_is_a_no_op_and_members_must_be_batchable(tmp_path):
  cache = str(tmp_path / "cache")
  configs = [tiny(lr, cache) for lr in LRS[:2]]
  dirs = [str(tmp_path / f"m{i}") for i in range(2)]
  first = train.train_batched(configs, dirs)
  mtimes = [os.path.getmtime(os.path.join(d, "summary.json")) for d in dirs]
  assert train.train_batched(configs, dirs) == first
  assert mtimes == [os.path.getmtime(os.path.join(d, "summary.json")) for d in dirs]
  other = tiny(1e-3, cache, **{"model.qk_layernorm": "off"})
  with pytest.raises(ConfigError, match="differ only in"):
    train.train_batched([configs[0], other], [str(tmp_path / "x"), str(tmp_path / "y")])


def test_sweep_runner_batches_lr_points(tmp_path):
  from configs import fig1_qk_layernorm
  from launch import sweep
  grid = fig1_qk_layernorm.get_grid("scale=cpu,sizes=d64-L2,seeds=0")
  tiny_overrides = {"train.steps": 4, "opt.warmup_steps": 1, "train.log_every": 1,
                    "train.eval_every": 4, "train.ckpt_every": 4, "data.eval_batches": 1,
                    "data.batch_size": 4, "model.seq_len": 16, "data.source": "synthetic",
                    "data.synthetic.vocab_size": 259}
  grid = sweep.with_extra_overrides(grid, tiny_overrides)
  counts = sweep.run_grid(grid, str(tmp_path), only=r"lr1e-0[23]_qkln-on", batch=True)
  assert counts == {"done": 2}
  for name in ("d64-L2_lr1e-02_qkln-on", "d64-L2_lr1e-03_qkln-on"):
    s = summary(tmp_path / name)
    assert (s["status"], s["batched_members"], s["steps"]) == ("done", 2, 4)
    assert [r["step"] for r in rows(tmp_path / name, "metrics.jsonl")] == [0, 1, 2, 3]


class _Killed(BaseException):
  """Stands for a SIGKILL in-process: no `except Exception` handler sees it."""


def _result_files(workdir) -> dict:
  """Metrics and eval rows, and the summary without its timings."""
  s = summary(workdir)
  for key in ("wall_s", "tokens_per_s", "mfu"):
    s.pop(key, None)
  return {"metrics": rows(workdir, "metrics.jsonl"), "eval": rows(workdir, "eval.jsonl"),
          "summary": s}


@pytest.mark.parametrize("how", ["sigterm@4", "kill_after_save@6", "sigterm@10"])
def test_interrupted_batched_sweep_resumes_exactly(tmp_path, monkeypatch, how):
  """Preempted between checkpoints, or killed right after one: the rerun restores the shared
  checkpoint with every member's bookkeeping, and each member's files equal those of an
  uninterrupted batched run, bit for bit. The LR-1e4 member is over the divergence margin from
  step 2 and diverged at step 6: at 4 and 6 it is interrupted mid-count, at 10 after its verdict."""
  from stability import checkpoint as checkpoint_lib
  from stability import loop
  cache = str(tmp_path / "cache")
  configs = [tiny(lr, cache, **{"loss.z_loss": 1e-4}) for lr in LRS]
  uninterrupted = [str(tmp_path / "whole" / f"m{i}") for i in range(len(LRS))]
  train.train_batched(configs, uninterrupted)

  kind, at = how.split("@")
  at = int(at)
  if kind == "sigterm":
    reached = loop.Preemption.reached
    monkeypatch.setattr(loop.Preemption, "reached",
                        lambda self, step: step == at or reached(self, step))
  else:
    save = checkpoint_lib.Checkpointer.save

    def save_then_die(self, step, *args):
      save(self, step, *args)
      self.wait()
      if step == at:
        raise _Killed()
    monkeypatch.setattr(checkpoint_lib.Checkpointer, "save", save_then_die)

  resumed = [str(tmp_path / "parts" / f"m{i}") for i in range(len(LRS))]
  if kind == "sigterm":
    first = train.train_batched(configs, resumed)
    assert [s["status"] for s in first] == ["preempted"] * 2 + [
        "diverged" if at > 8 else "preempted"]
    assert {s["steps"] for s in first[:2]} == {at}
  else:
    with pytest.raises(_Killed):
      train.train_batched(configs, resumed)
  monkeypatch.undo()

  final = train.train_batched(configs, resumed)
  assert [(s["status"], s["diverged_at_step"]) for s in final] == [
      ("done", None), ("done", None), ("diverged", 6)]
  for whole, part in zip(uninterrupted, resumed):
    assert _result_files(part) == _result_files(whole), part


def test_batched_members_write_tensorboard_events(tmp_path):
  pytest.importorskip("clu")
  cache = str(tmp_path / "cache")
  dirs = [str(tmp_path / f"m{i}") for i in range(2)]
  train.train_batched([tiny(lr, cache) for lr in LRS[:2]], dirs)
  for d in dirs:
    assert [f for f in os.listdir(d) if f.startswith("events.out.tfevents")], os.listdir(d)


def test_sweep_resumes_a_batched_group_whose_member_diverged_before_a_preemption(
    tmp_path, monkeypatch, caplog):
  """One member's verdict is on disk and the others were preempted: the rerun resumes the whole
  group from its checkpoint (it used to start the survivors again, from step 0, as a new group)."""
  import logging
  from configs import fig1_qk_layernorm
  from launch import sweep
  from stability import loop
  from stability import members
  grid = sweep.with_extra_overrides(fig1_qk_layernorm.get_grid("scale=cpu,sizes=d64-L2,seeds=0"), {
      "train.steps": 8, "opt.warmup_steps": 1, "train.log_every": 1, "train.eval_every": 4,
      "train.ckpt_every": 4, "data.eval_batches": 1, "data.batch_size": 4, "model.seq_len": 16,
      "data.source": "synthetic", "data.synthetic.vocab_size": 259})
  only = r"lr1e-0[123]_qkln-on"
  record = members.Member.record

  def lr_1e1_diverges_at_2(self, step, row, init_loss):
    record(self, step, row, init_loss)
    if self.files.dir.name.startswith("d64-L2_lr1e-01") and step == 2:
      self.status, self.diverged_at = "diverged", 2
  monkeypatch.setattr(members.Member, "record", lr_1e1_diverges_at_2)
  reached = loop.Preemption.reached
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(loop.Preemption, "reached", lambda self, step: step == 6 or reached(self, step))
    assert sweep.run_grid(grid, str(tmp_path), only=only, batch=True) == {
        "diverged": 1, "preempted": 2}
  with caplog.at_level(logging.INFO):
    assert sweep.run_grid(grid, str(tmp_path), only=only, batch=True) == {
        "diverged": 1, "done": 2}
  assert "from step 6" in caplog.text
  assert len(os.listdir(tmp_path / ".batched")) == 1
  for name in ("d64-L2_lr1e-02_qkln-on", "d64-L2_lr1e-03_qkln-on"):
    assert [r["step"] for r in rows(tmp_path / name, "metrics.jsonl")] == list(range(8))
  diverged = summary(tmp_path / "d64-L2_lr1e-01_qkln-on")
  assert (diverged["status"], diverged["diverged_at_step"]) == ("diverged", 2)
