"""The benchmark end to end, and the PyTorch reference it compares against."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import base
from stability import run as run_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_bench_reports_every_row_and_the_summary_table(tmp_path):
  out = tmp_path / "bench"
  cmd = [sys.executable, "-m", "stability.tools.bench", "--sizes=d32-L1", "--batch=4",
         "--seq_len=16", "--vocab=64", "--steps=2", "--warmup_s=0", "--grad_accum=2",
         "--members=2", "--torch=", "--heads=plain,fused", "--head_chunk_tokens=16,32", f"--out={out}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads((tmp_path / "bench.json").read_text())
  assert [(r["size"], r["impl"]) for r in report["rows"]] == [
      ("d32-L1", impl) for impl in ("jax", "jax fused-head c16", "jax fused-head c32",
                                    "jax log step", "jax 2 LRs vmap")]
  for r in report["rows"]:
    assert r["error"] is None and r["step_s"] > 0 and r["compile_s"] > 0
  jax_rows = [r for r in report["rows"]
              if not r["impl"].endswith("vmap") and r["impl"] != "jax log step"]
  assert all(np.isfinite(r["first_loss"]) and abs(r["first_loss"] - np.log(64)) < 0.5
             and r["compiled_gib"] > 0 for r in jax_rows)  # ~uniform over the 64 tokens
  for fused in jax_rows[1:]:  # same weights, same first loss, whatever the chunk
    np.testing.assert_allclose(fused["first_loss"], jax_rows[0]["first_loss"], rtol=1e-5)
  assert "2 microbatch(es)" in report["machine"]
  table = (tmp_path / "bench.md").read_text()
  assert "| d32-L1 | jax |" in table and "| d32-L1 | jax fused-head c32 |" in table
  assert "×" in table and "log step ÷ step" in table
  log_ratio = table.split("| d32-L1 | jax |")[1].splitlines()[0].rstrip(" |").split("|")[-1]
  assert float(log_ratio) > 0  # the log step's time over the plain step's, on the jax row


def _config(grad_accum: int):
  c = base.get_config("size=d64-L2,data=synthetic,lr=3e-3")
  c.model.seq_len, c.model.dtype = 16, "float32"
  c.data.batch_size, c.data.synthetic.vocab_size = 8, 97
  c.train.grad_accum, c.train.steps, c.opt.warmup_steps = grad_accum, 20, 2
  return c


@pytest.mark.slow
def test_torch_reference_trains_like_the_jax_step():
  """Same weights, same batches: same first loss and the same losses over four AdamW steps
  (clip, independent decay, warm-up), with gradients accumulated over strided microbatches."""
  torch = pytest.importorskip("torch")  # the [bench] extra, not part of [dev]
  from stability.tools import torch_reference as ref
  config = _config(grad_accum=2)
  run = run_lib.Run([config], 97)
  state = run.init_state(0)
  m = config.model
  model = ref.Decoder(97, m.d_model, m.num_layers, m.num_heads, m.mlp_ratio,
                      qk_layernorm=True, rope_base=m.rope_base)
  ref.copy_from_jax(model, jax.device_get(state.params))
  opt, sched = ref.make_optimizer(model, config.opt, config.train.steps)
  torch_step = ref.make_train_step(model, opt, sched, z_loss=config.loss.z_loss,
                                   clip_norm=config.opt.clip_norm, grad_accum=2)

  rng = np.random.default_rng(0)
  batches = [rng.integers(0, 97, (8, 17), dtype=np.int32) for _ in range(4)]
  np.testing.assert_allclose(
      ref.eval_loss(model, torch.from_numpy(batches[0].astype(np.int64))),
      run.evaluate(state.params, [run.global_batch(batches[0])]), rtol=1e-5)
  jax_losses, torch_losses = [], []
  for tokens in batches:
    state, metrics = run.train_step(state, run.global_batch(tokens), diagnose=False)
    jax_losses.append(float(metrics["train_loss"][0] + metrics["z_loss"][0]))  # CE + z-loss, as torch
    torch_losses.append(float(torch_step(torch.from_numpy(tokens.astype(np.int64)))))
  assert len(set(jax_losses)) == 4  # the weights moved
  np.testing.assert_allclose(torch_losses, jax_losses, rtol=2e-5)


@pytest.mark.slow
def test_bench_times_the_torch_reference_in_a_process_of_its_own(tmp_path):
  pytest.importorskip("torch")  # the [bench] extra, not part of [dev]
  out = tmp_path / "bench"
  cmd = [sys.executable, "-m", "stability.tools.bench", "--sizes=d32-L1", "--batch=4", "--seq_len=16",
         "--vocab=64", "--steps=2", "--warmup_s=0", "--torch=eager", f"--out={out}"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = {r["impl"]: r for r in json.loads((tmp_path / "bench.json").read_text())["rows"]}
  assert rows["torch eager"]["error"] is None and rows["torch eager"]["step_s"] > 0
  np.testing.assert_allclose(rows["torch eager"]["first_loss"], rows["jax"]["first_loss"],
                             rtol=1e-5)  # float32 on CPU: the same weights give the same loss
