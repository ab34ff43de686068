"""The training loop end to end: sharding, resume, preemption, divergence, golden values.

Runs are tiny (d64-L2 or d128-L1, 32 tokens, batch 8) and float32 wherever numbers are compared.
Multi-device and kill tests run in subprocesses: XLA_FLAGS must be set before JAX starts, and a
SIGKILL must hit a real process.
"""

import collections
import json
import logging
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from analysis import results as analysis_results
from configs import base
from stability import data as data_lib
from stability.data import source as data_source
from stability import run as run_lib
from stability import run_files
from stability import train
from stability import validation
from tests import reference
from tests.faults_util import read_jsonl, snapshot

REPO = pathlib.Path(__file__).resolve().parents[1]
VOCAB = 259  # the embedded corpus's byte vocabulary: synthetic runs share its programs
TINY = {
    "model.seq_len": 32, "model.dtype": "float32", "data.batch_size": 8,
    "data.eval_batches": 2, "data.synthetic.vocab_size": VOCAB, "train.steps": 10,
    "opt.warmup_steps": 2, "train.log_every": 1, "train.eval_every": 5, "train.ckpt_every": 5,
}
# Most tests share this config: one uninterrupted run is the reference of resume and preemption,
# and the compilation cache serves its programs to the others. Clipping is active at step 0 and
# Adam's ε is comparable to |g|, so that Δ is not just sign(g).
CLIP, EPS = 0.5, 1e-3
RESUME = {"train.steps": 20, "opt.peak_lr": 3e-3, "opt.clip_norm": CLIP, "opt.eps": EPS}
SHARD_SIZE = "d128-L1"  # 2 heads and MLP 512 split over tensor=2, d_model 128 over fsdp=4


def tiny_config(overrides=None, *, size="d64-L2", source="synthetic"):
  """A base config with the TINY settings, then `overrides` ({"group.field": value})."""
  config = base.get_config(f"size={size},data={source}")
  for key, value in {**TINY, **(overrides or {})}.items():
    *groups, field = key.split(".")
    node = config
    for group in groups:
      node = node[group]
    node[field] = value
  return config


def main_args(workdir, overrides=None, *, size="d64-L2", source="synthetic"):
  """`python -m stability.main` arguments giving the same config as `tiny_config`."""
  flags = [f"--config.{k}={v}" for k, v in {**TINY, **(overrides or {})}.items()]
  return ["--workdir", str(workdir), f"--config={REPO}/configs/base.py:size={size},data={source}",
          *flags]


def child_env(devices=1, **extra):
  """A subprocess environment: CPU, `devices` host devices (and, from conftest's environment,
  the session's compilation cache)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", **extra)
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return env




def losses_by_step(workdir):
  return {r["step"]: r["train_loss"] for r in read_jsonl(pathlib.Path(workdir) / "metrics.jsonl")}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  """The embedded corpus, built once per test session."""
  return str(tmp_path_factory.mktemp("stability_cache"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The RESUME config trained in one go: the reference of the resume and preemption tests."""
  workdir = tmp_path_factory.mktemp("uninterrupted") / "run"
  summary = train.train_and_evaluate(tiny_config(RESUME), str(workdir))
  assert summary["status"] == "done"
  return workdir


def assert_same_run(workdir, reference_dir):
  """Bit-identical train losses and eval losses, each step exactly once."""
  got = read_jsonl(workdir / "metrics.jsonl")
  want = read_jsonl(reference_dir / "metrics.jsonl")
  assert [r["step"] for r in got] == list(range(RESUME["train.steps"]))  # no duplicates, no gaps
  assert [r["train_loss"] for r in got] == [r["train_loss"] for r in want]
  assert [r["grad_norm"] for r in got] == [r["grad_norm"] for r in want]
  got_eval = read_jsonl(workdir / "eval.jsonl")
  assert [r["step"] for r in got_eval] == [0, 5, 10, 15, 20]
  assert got_eval == read_jsonl(reference_dir / "eval.jsonl")
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "done" and summary["steps"] == RESUME["train.steps"]


# --- 1. sharding ----------------------------------------------------------------------------


# (spec, shard shape) per parameter: wi [embed=128, mlp=512], embedding [vocab=259, embed=128],
# head [embed, vocab]. 259 is prime: tensor=2 cannot split it, so the vocab axis is replicated.
SHARDED = {
    "8x1x1": {"block_0/mlp/wi/kernel": (["fsdp", "tensor"], [128, 512]),
              "embed/embedding": (["tensor", "fsdp"], [259, 128]),
              "head/kernel": (["fsdp", "tensor"], [128, 259])},
    "2x4x1": {"block_0/mlp/wi/kernel": (["fsdp", "tensor"], [32, 512]),
              "embed/embedding": (["tensor", "fsdp"], [259, 32]),
              "head/kernel": (["fsdp", "tensor"], [32, 259])},
    "2x2x2": {"block_0/mlp/wi/kernel": (["fsdp", "tensor"], [64, 256]),
              "embed/embedding": ([None, "fsdp"], [259, 64]),
              "head/kernel": (["fsdp", None], [64, 259])},
}


@pytest.mark.slow
def test_sharded_runs_match_one_device(tmp_path):
  """data=8, data×fsdp=2×4 and data×fsdp×tensor=2×2×2 give the 1-device train losses.

  float32: the sharded runs reduce the same sums in another order (all-reduces over shards);
  seen: ≤ 3.1e-7 relative over 10 steps. Bound: rtol 1e-5.
  """
  if jax.device_count() != 1:
    pytest.skip("the 1-device reference needs a 1-device process")
  overrides = {"train.eval_every": 10, "train.ckpt_every": 10}
  proc = subprocess.run(
      [sys.executable, "-m", "tests.sharded_runs", json.dumps(overrides), str(tmp_path)],
      env=child_env(devices=8), cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT", 1)[1])

  one = tiny_config({**overrides, "mesh.data": 1}, size=SHARD_SIZE)
  assert train.train_and_evaluate(one, str(tmp_path / "1x1x1"))["status"] == "done"
  want = losses_by_step(tmp_path / "1x1x1")
  assert sorted(want) == list(range(10))

  for name, params in SHARDED.items():
    assert out[name]["status"] == "done", name
    for path, (spec, shard) in params.items():
      got = out[name][path]
      assert got["spec"] == spec and got["shards"] == [shard], (name, path, got)
      assert got["mu_same"], f"{name}: Adam's mu of {path} is not sharded like the parameter"
    got = losses_by_step(tmp_path / name)
    assert sorted(got) == sorted(want), name
    np.testing.assert_allclose([got[s] for s in sorted(want)], [want[s] for s in sorted(want)],
                               rtol=1e-5, err_msg=name)


# --- 2. resume after SIGKILL ---------------------------------------------------------------


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_exact(tmp_path, uninterrupted):
  """Killed after step 13 (checkpoint 10 on disk), rerun: the same run, bit for bit."""
  workdir = tmp_path / "run"
  proc = subprocess.run(
      [sys.executable, "-m", "tests.hooked_main", *main_args(workdir, RESUME)],
      env=child_env(TEST_HOOK="kill_at=13,10"), cwd=REPO, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
  assert json.loads((workdir / "summary.json").read_text())["status"] == "running"
  assert max(losses_by_step(workdir)) == 13  # rows past the checkpoint, to be dropped
  assert (workdir / "checkpoints" / "10").is_dir()

  summary = train.train_and_evaluate(tiny_config(RESUME), str(workdir))
  assert summary["status"] == "done"
  assert_same_run(workdir, uninterrupted)


class _Killed(BaseException):
  """Stands for a SIGKILL in-process: no `except Exception` handler sees it."""


@pytest.mark.parametrize("ckpt_every", [5, 8], ids=["end_saved_in_loop", "end_saved_after"])
@pytest.mark.slow
def test_killed_before_final_summary_finishes_on_rerun(tmp_path, uninterrupted, ckpt_every):
  """Killed after the final eval row but before summary.json says done: the rerun finishes with
  one eval row per step (it used to append the final eval a second time). When step 20 is no
  checkpoint step (every 8), the final checkpoint is written before the final eval and still
  calls the run running (a kill there used to leave the run "running" for ever)."""
  config = tiny_config({**RESUME, "train.ckpt_every": ckpt_every})
  workdir = tmp_path / "run"
  write_summary = run_files.RunFiles.write_summary

  def die_when_done(self, summary):
    if summary["status"] == "done":
      raise _Killed()
    write_summary(self, summary)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(run_files.RunFiles, "write_summary", die_when_done)
    with pytest.raises(_Killed):
      train.train_and_evaluate(config, str(workdir))
  assert [r["step"] for r in read_jsonl(workdir / "eval.jsonl")][-1] == 20
  assert (workdir / "checkpoints" / "20").is_dir()  # the rerun restores step 20

  assert train.train_and_evaluate(config, str(workdir))["status"] == "done"
  assert_same_run(workdir, uninterrupted)  # checkpoint steps do not change the training


@pytest.mark.slow
def test_checkpoint_of_the_earlier_loop_format_resumes(tmp_path, uninterrupted):
  """Checkpoints written before single runs and batched sweeps shared one loop kept the loop's
  bookkeeping as {init_eval_loss, over_margin, wall_s}: such a run still resumes exactly."""
  workdir = tmp_path / "run"
  shutil.copytree(uninterrupted, workdir)
  shutil.rmtree(workdir / "checkpoints" / "20")
  summary = json.loads((workdir / "summary.json").read_text())
  (workdir / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
  loop_file = workdir / "checkpoints" / "15" / "loop" / "metadata"
  saved = json.loads(loop_file.read_text())
  assert saved["members"][0]["status"] == "running"
  loop_file.write_text(json.dumps({"init_eval_loss": saved["init_eval_loss"], "over_margin": 0,
                                   "wall_s": saved["wall_s"]}))

  assert train.train_and_evaluate(tiny_config(RESUME), str(workdir))["status"] == "done"
  assert_same_run(workdir, uninterrupted)


@pytest.mark.slow
def test_a_resume_under_other_software_is_recorded_and_said(tmp_path, uninterrupted, caplog):
  """The summary's provenance: one record from step 0 for a run trained in one go; a resume
  whose checkpoint was written under another JAX adds a record from the step it resumed at,
  with a warning naming the change (and the run still resumes exactly)."""
  summary = json.loads((uninterrupted / "summary.json").read_text())
  [record] = summary["provenance"]
  assert record["from_step"] == 0 and record["jax"] == jax.__version__
  workdir = tmp_path / "run"
  shutil.copytree(uninterrupted, workdir)
  shutil.rmtree(workdir / "checkpoints" / "20")
  (workdir / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
  loop_file = workdir / "checkpoints" / "15" / "loop" / "metadata"
  saved = json.loads(loop_file.read_text())
  older = {**saved["provenance"][0], "jax": "0.0.1"}
  loop_file.write_text(json.dumps({**saved, "provenance": [older]}))

  with caplog.at_level(logging.WARNING):
    assert train.train_and_evaluate(tiny_config(RESUME), str(workdir))["status"] == "done"
  history = json.loads((workdir / "summary.json").read_text())["provenance"]
  assert history == [older, {**record, "from_step": 15}]
  assert f"jax 0.0.1 -> {jax.__version__}" in caplog.text
  assert_same_run(workdir, uninterrupted)


# --- 3. preemption (SIGTERM) ---------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_checkpoints_then_rerun_finishes(tmp_path, uninterrupted):
  """SIGTERM mid-run: status preempted with a checkpoint; the rerun equals an uninterrupted run."""
  workdir = tmp_path / "run"
  proc = subprocess.Popen(
      [sys.executable, "-m", "tests.hooked_main", *main_args(workdir, RESUME)],
      env=child_env(TEST_HOOK="throttle"), cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    metrics = workdir / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
      assert proc.poll() is None and time.time() < deadline, proc.communicate()[1][-3000:]
      time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, stderr[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "preempted", summary
  stopped = summary["steps"]
  assert 3 <= stopped < RESUME["train.steps"]
  assert str(stopped) in os.listdir(workdir / "checkpoints")

  assert train.train_and_evaluate(tiny_config(RESUME), str(workdir))["status"] == "done"
  assert_same_run(workdir, uninterrupted)


# --- 4. divergence, finished runs, a changed config ----------------------------------------


@pytest.mark.slow
def test_next_lr_and_seed_reuse_the_run_and_train_as_from_a_new_one(tmp_path, monkeypatch):
  """A sweep's next point (another LR and seed, same shapes) steps through the programs of the
  Run already built, with its own hyper-parameters: bit for bit the run a new Run trains."""
  monkeypatch.setattr(run_lib, "_RECENT_RUNS", collections.OrderedDict())
  other = tiny_config({**RESUME, "opt.peak_lr": 1e-2, "train.seed": 1, "data.seed": 1})
  train.train_and_evaluate(tiny_config(RESUME), str(tmp_path / "first"))
  [first] = run_lib._RECENT_RUNS.values()
  assert run_lib.cached_run([tiny_config(RESUME, size="d128-L1")], VOCAB) is not first
  with pytest.raises(ValueError, match="compile to this run"):
    first.use_hypers_of([tiny_config({**RESUME, "opt.warmup_steps": 3})])
  train.train_and_evaluate(other, str(tmp_path / "reused"))
  assert run_lib.cached_run([other], VOCAB + 1) is not first  # another vocabulary
  assert run_lib.cached_run([other], VOCAB) is first
  assert first.hypers["peak_lr"].tolist() == [np.float32(1e-2)]
  monkeypatch.setattr(run_lib, "_RECENT_RUNS", collections.OrderedDict())
  train.train_and_evaluate(other, str(tmp_path / "new"))
  assert losses_by_step(tmp_path / "reused") == losses_by_step(tmp_path / "new")
  assert (read_jsonl(tmp_path / "reused" / "eval.jsonl")
          == read_jsonl(tmp_path / "new" / "eval.jsonl"))


@pytest.mark.slow
def test_summary_names_the_head_that_auto_resolved_to(tmp_path):
  """config.json keeps `auto`; the summary says which head ran (plain below vocab 8192)."""
  config = tiny_config({"model.head_impl": "auto", "train.steps": 2, "opt.warmup_steps": 1})
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert (summary["status"], summary["head_impl"]) == ("done", "plain")
  assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["head_impl"] == "auto"


def test_divergence_is_a_result_not_an_error(tmp_path):
  """An absurd LR ends as status diverged with readable files, and a rerun does nothing."""
  workdir = tmp_path / "lr1e6"
  config = tiny_config({"opt.peak_lr": 1e6, "model.qk_layernorm": "off", "loss.z_loss": 0.0,
                        "opt.clip_norm": 0.0, "train.steps": 20})
  summary = train.train_and_evaluate(config, str(workdir))
  assert summary["status"] == "diverged"
  assert isinstance(summary["diverged_at_step"], int) and 0 < summary["diverged_at_step"] < 20
  assert summary["steps"] < 20

  on_disk = json.loads((workdir / "summary.json").read_text())
  assert on_disk["status"] == "diverged"
  assert on_disk["diverged_at_step"] == summary["diverged_at_step"]
  assert json.loads((workdir / "config.json").read_text())["opt"]["peak_lr"] == 1e6
  rows = read_jsonl(workdir / "metrics.jsonl")
  assert [r["step"] for r in rows] == list(range(summary["diverged_at_step"] + 1))
  finite = [math.isfinite(r["train_loss"]) and math.isfinite(r["grad_norm"]) for r in rows]
  assert all(finite[:-1]) and not finite[-1]  # the first non-finite step, and no row after it
  assert math.isnan(summary["final_eval_loss"])  # non-finite params: no eval attempted
  evals = read_jsonl(workdir / "eval.jsonl")
  assert evals[0]["step"] == 0 and math.isfinite(evals[0]["eval_loss"])

  runs = analysis_results.load_runs(workdir)
  assert len(runs) == 1 and runs.status[0] == "diverged"
  assert runs.diverged_at_step[0] == summary["diverged_at_step"]
  assert runs.lr[0] == 1e6

  before = snapshot(workdir)
  assert train.train_and_evaluate(config, str(workdir)) == on_disk
  assert snapshot(workdir) == before


def test_divergence_step_is_the_first_over_margin_log(tmp_path):
  """train loss > ℓ0 + margin for `patience` logs in a row: diverged at that log, rows end there.

  LR ~0 keeps the loss at ℓ0 ± batch noise; margin 0 and patience 1 make the first row above ℓ0
  the divergence. Evals every 2 steps put a boundary right after it (where a later row used to
  overwrite the verdict, so the run went on and reported another step).
  """
  config = tiny_config({"opt.peak_lr": 1e-6, "opt.min_lr": 0.0, "train.eval_every": 2,
                        "train.divergence_margin": 0.0, "train.divergence_patience": 1})
  summary = train.train_and_evaluate(config, str(tmp_path / "run"))
  rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
  over = [r["step"] for r in rows if r["train_loss"] > summary["init_eval_loss"]]
  assert summary["status"] == "diverged" and over, (summary, rows)
  assert summary["diverged_at_step"] == over[0]
  assert rows[-1]["step"] == over[0]


@pytest.mark.slow
def test_finished_run_returns_at_once_and_changed_config_is_refused(tmp_path, uninterrupted):
  """A done run returns its summary and writes nothing; another config: ConfigError, no writes."""
  workdir = tmp_path / "run"
  shutil.copytree(uninterrupted, workdir)
  config = tiny_config(RESUME)
  before = snapshot(workdir)
  assert json.loads(before["summary.json"])["status"] == "done"

  start = time.time()
  again = train.train_and_evaluate(config, str(workdir))
  assert again == json.loads(before["summary.json"])
  assert time.time() - start < 2.0  # nothing was built or compiled
  assert snapshot(workdir) == before

  changed = tiny_config({**RESUME, "opt.peak_lr": 0.5})
  with pytest.raises(validation.ConfigError, match="opt.peak_lr"):
    train.train_and_evaluate(changed, str(workdir))
  assert snapshot(workdir) == before
  shutil.rmtree(workdir / "checkpoints")
  (workdir / "summary.json").write_text(json.dumps({**again, "status": "running"}))
  before = snapshot(workdir)
  with pytest.raises(validation.ConfigError, match="opt.peak_lr"):  # unfinished: refused too
    train.train_and_evaluate(changed, str(workdir))
  assert snapshot(workdir) == before


# --- 5. golden values ----------------------------------------------------------------------

GOLDEN = {  # the RESUME config (d64-L2, synthetic, seed 0, float32): the first train step
    "train_loss": 6.004379,
    "grad_norm": 1.630249,
    "grad_rms/block_0/mlp/wi/kernel": 2.978635e-3,
}


@pytest.fixture(scope="module")
def step0():
  """(config, run, params before, batch, metrics) of step 0 with diagnostics, through run.Run."""
  config = tiny_config(RESUME)
  run = run_lib.Run([config], VOCAB)
  state = run.init_state(config.train.seed)
  params = jax.tree_util.tree_map(lambda x: np.array(x, copy=True), state.params)
  batch = next(data_lib.make_train_iterator(config.data, config.model.seq_len))
  _, metrics = run.train_step(state, run.global_batch(batch), diagnose=True)
  return config, run, params, batch, {k: float(v[0]) for k, v in jax.device_get(metrics).items()}


def test_golden_first_step(step0):
  metrics = step0[-1]
  for key, want in GOLDEN.items():
    np.testing.assert_allclose(
        metrics[key], want, rtol=1e-5,
        err_msg=f"{key} of the first step changed; if this change is intended, update the golden "
                "values and say so in the commit")


# --- 6. diagnostics through the train step -------------------------------------------------


def tree_by_path(tree):
  return {"/".join(k.key for k in path): x
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_diagnostics_match_independent_computation(step0):
  """Max attention logit and loss vs float64 numpy; grad / clipped grad / Adam direction /
  param RMS vs jax.grad + optax. float32 vs float64 or another summation order: rtol 1e-5 (1e-4
  for gradients, whose small entries carry more relative error)."""
  config, run, params, batch, metrics = step0

  logits, max_logits = reference.forward(params, batch[:, :-1], run.model_cfg)
  assert len(max_logits) == 2
  for i, want in enumerate(max_logits):
    np.testing.assert_allclose(metrics[f"attn_logit_max/block_{i}"], want, rtol=1e-5)
  log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  target = np.take_along_axis(logits, batch[:, 1:, None], -1)[..., 0]
  np.testing.assert_allclose(metrics["train_loss"], np.mean(log_z - target), rtol=1e-5)

  @jax.jit
  def grad_fn(p):
    def loss_fn(p):
      logits = run.model.apply({"params": p}, jnp.asarray(batch[:, :-1]))
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(batch[:, 1:]))
      z = jax.nn.logsumexp(logits, axis=-1)
      return jnp.mean(ce) + config.loss.z_loss * jnp.mean(z ** 2)
    return jax.grad(loss_fn)(p)

  grads = grad_fn(params)
  grad_norm = float(optax.global_norm(grads))
  assert grad_norm > 1.5 * CLIP, "the test needs clipping to be active"
  np.testing.assert_allclose(metrics["grad_norm"], grad_norm, rtol=1e-5)
  clipped, _ = optax.clip_by_global_norm(CLIP).update(grads, optax.EmptyState())
  adam = optax.scale_by_adam(b1=config.opt.b1, b2=config.opt.b2, eps=EPS)
  delta, _ = adam.update(clipped, adam.init(params))

  factor = min(1.0, CLIP / metrics["grad_norm"])
  names = tree_by_path(params)
  assert "block_0/mlp/wi/kernel" in names and len(names) == 23
  delta_by_name = tree_by_path(delta)
  for name, g in tree_by_path(grads).items():
    g_rms = float(np.sqrt(np.mean(np.square(g))))
    np.testing.assert_allclose(metrics[f"grad_rms/{name}"], g_rms, rtol=1e-4, err_msg=name)
    np.testing.assert_allclose(metrics[f"grad_rms_clipped/{name}"],
                               metrics[f"grad_rms/{name}"] * factor, rtol=1e-5, err_msg=name)
    d_rms = float(np.sqrt(np.mean(np.square(delta_by_name[name]))))
    assert 0.05 < d_rms < 0.95, (name, d_rms)  # neither ~0 nor sign(g): ε matters
    np.testing.assert_allclose(metrics[f"update_rms/{name}"], d_rms, rtol=1e-4, err_msg=name)
    p_rms = float(np.sqrt(np.mean(np.square(names[name]))))
    np.testing.assert_allclose(metrics[f"param_rms/{name}"], p_rms, rtol=1e-5, err_msg=name)


# --- 7. gradient accumulation --------------------------------------------------------------


def trajectory(config, steps=5):
  """Metrics of the first `steps` steps (with diagnostics) and the params after them."""
  run = run_lib.Run([config], VOCAB)
  state = run.init_state(config.train.seed)
  batches = data_lib.make_train_iterator(config.data, config.model.seq_len)
  rows = []
  for _ in range(steps):
    state, metrics = run.train_step(state, run.global_batch(next(batches)), diagnose=True)
    rows.append({k: float(v[0]) for k, v in jax.device_get(metrics).items()})
  return rows, jax.device_get(state.params)


@pytest.mark.slow
def test_grad_accumulation_matches_one_big_batch():
  """grad_accum=2 (two microbatches of 4) vs one batch of 8 over 5 steps, float32.

  The sums run in another order: losses, norms and RMS agree to rtol 1e-5, params to 1e-4 (Adam
  divides by sqrt(v), which magnifies the rounding of the smallest gradients). Maxima over the
  microbatches equal the maximum over the batch.
  """
  one, params_one = trajectory(tiny_config(RESUME))
  two, params_two = trajectory(tiny_config({**RESUME, "train.grad_accum": 2}))
  assert one[-1]["train_loss"] < one[0]["train_loss"] - 0.05  # the params did move
  keys = [k for k in one[0] if k.startswith(("grad_rms/", "update_rms/", "attn_logit_max/"))]
  assert len(keys) == 2 * 23 + 2
  for key in ("train_loss", "z_loss", "grad_norm", "output_logit/max", *keys):
    np.testing.assert_allclose([r[key] for r in two], [r[key] for r in one], rtol=1e-5,
                               err_msg=key)
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), params_two, params_one)


# --- 8. the command line -------------------------------------------------------------------


@pytest.mark.slow
def test_data_config_is_validated_once(tmp_path, monkeypatch):
  """train_and_evaluate checks the data config once; the iterator and eval batches trust it."""
  calls = []
  validate = data_source.Source.validate
  monkeypatch.setattr(data_source.Source, "validate",
                      lambda self, *args: calls.append(self.name) or validate(self, *args))
  summary = train.train_and_evaluate(tiny_config(), str(tmp_path / "run"))
  assert summary["status"] == "done" and calls == ["synthetic"]


@pytest.mark.slow
def test_main_on_embedded_corpus(tmp_path, cache_dir):
  """The README's command on the embedded corpus: exit 0 and a complete result folder."""
  workdir = tmp_path / "run"
  args = main_args(workdir, {**RESUME, "data.embedded.cache_dir": cache_dir}, source="embedded")
  proc = subprocess.run([sys.executable, "-m", "stability.main", *args], env=child_env(),
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert json.loads(proc.stdout)["status"] == "done"
  names = set(os.listdir(workdir))
  assert {"config.json", "metrics.jsonl", "eval.jsonl", "summary.json", "checkpoints"} <= names
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "done" and summary["steps"] == 20
  assert summary["vocab_size"] == 259 and summary["tokens"] == 20 * 8 * 32
  assert summary["final_eval_loss"] < summary["init_eval_loss"] - 0.5  # English is learnable
  assert json.loads((workdir / "config.json").read_text())["data"]["source"] == "embedded"
  assert sorted(losses_by_step(workdir)) == list(range(20))
  assert [r["step"] for r in read_jsonl(workdir / "eval.jsonl")] == [0, 5, 10, 15, 20]
  assert sorted(int(s) for s in os.listdir(workdir / "checkpoints") if s.isdigit()) == [15, 20]


@pytest.mark.slow
@pytest.mark.parametrize(("config", "extra", "message"), [
    ("configs/nope.py:size=d64-L2", [], "--config: no file 'configs/nope.py'"),
    ("configs/base.py:size=d64-L2,data=embedded", ["--config.opt.eps=-1"], "opt.eps"),
    ("configs/base.py:size=d64-L2,data=c4", ["--config.data.c4.vocab_path=/nonexistent.model"],
     "data=embedded"),
])
def test_main_refuses_bad_input_in_one_line_with_exit_code_2(tmp_path, config, extra, message):
  """A missing config file, a bad value, or C4 without its vocabulary (with the hint to the
  built-in corpus): one line on stderr, exit code 2, no result folder."""
  proc = subprocess.run(
      [sys.executable, "-m", "stability.main", f"--workdir={tmp_path / 'run'}",
       f"--config={config}", *extra], env=child_env(), cwd=REPO, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.startswith("stability.main:")]
  assert len(lines) == 1 and message in lines[0], proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_the_training_path_builds_the_data_source_once(tmp_path, monkeypatch):
  """Validated once, then handed down: vocabulary, batches, eval set and provenance use it."""
  built = []
  init = data_source.Source.__init__

  def counting_init(self, data_cfg):
    built.append(self.name)
    init(self, data_cfg)
  monkeypatch.setattr(data_source.Source, "__init__", counting_init)
  summary = train.train_and_evaluate(tiny_config(), str(tmp_path / "run"))
  assert summary["status"] == "done" and built == ["synthetic"], built
