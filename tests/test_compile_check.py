"""`python -m stability.tools.compile_check`: target parsing, exact state bytes, fit / no-fit verdicts.

The compiles run on simulated CPU devices (the fallback); with libtpu installed, one more test
compiles for a real TPU topology.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from stability.tools import compile_check
from stability.model import Decoder, ModelConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
GiB = 2**30
TINY = ["--config.model.seq_len=32", "--config.data.batch_size=16",
        "--config.data.synthetic.vocab_size=256", "--config.data.eval_batches=1"]


@pytest.mark.parametrize("name, devices, hosts, grid, hbm_gib", [
    ("v4-32", 16, 4, "v4:2x2x4", 32),
    ("v4-8", 4, 1, "v4:2x2x1", 32),
    ("v5p-128", 64, 16, "v5:4x4x4", 95),
    ("v5e-8", 8, 1, "v5e:2x4", 16),
    ("v5litepod-16", 16, 4, "v5e:4x4", 16),
    ("v6e-256", 256, 64, "v6e:16x16", 32),
    ("8xH100", 8, 1, "", 80),
    ("H200x16", 16, 2, "", 141),
    ("A100-40", 1, 1, "", 40),
    ("A100", 1, 1, "", 80),
])
def test_parse_topology(name, devices, hosts, grid, hbm_gib):
  topo = compile_check.parse_topology(name)
  assert (topo.num_devices, topo.num_hosts, topo.tpu_grid) == (devices, hosts, grid)
  assert topo.hbm_bytes == hbm_gib * GiB


@pytest.mark.parametrize("name", ["v4-6", "v3-8", "tpu", "7xB200"])
def test_parse_topology_rejects_unknown_targets(name):
  with pytest.raises(ValueError, match="topology"):
    compile_check.parse_topology(name)


def param_count(size: str, vocab: int) -> int:
  """Parameters of the model, from its own abstract init (independent of compile_check)."""
  config = base.get_config(f"size={size}")
  model = Decoder(ModelConfig.from_config(config.model, vocab))
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1, 8), jnp.int32)))
  return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes["params"]))


def run_check(tmp_path, *args, backend="cpu") -> tuple[int, str, dict]:
  report = tmp_path / "report.json"
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
  result = subprocess.run(
      [sys.executable, "-m", "stability.tools.compile_check", f"--backend={backend}",
       f"--report={report}", *args], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=300)
  data = json.loads(report.read_text()) if report.exists() else {}
  return result.returncode, result.stdout + result.stderr, data


@pytest.mark.slow
def test_simulated_compile_of_a_small_config_fits(tmp_path):
  code, out, report = run_check(
      tmp_path, "--config=configs/base.py:size=d64-L2,data=synthetic", "--topology=v5e-8",
      "--config.mesh.data=1", "--config.mesh.fsdp=-1", *TINY)
  assert code == 0, out[-3000:]
  assert "SIMULATED: compiled for 8 CPU devices standing in for v5e-8" in out
  assert report["backend"] == "cpu" and report["verdict"] == "state fits"
  assert report["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  # fsdp: each device holds an eighth of every sharded tensor; norm scales stay replicated
  total = 4 * param_count("d64-L2", 256)
  assert total / 8 <= report["params_bytes"] < total / 8 * 1.1
  assert report["opt_bytes"] == pytest.approx(2 * report["params_bytes"], abs=64)
  assert report["batch_bytes"] == 16 // 8 * 33 * 4
  assert 0 < report["temp_bytes"] < report["total_bytes"] < 0.01 * report["hbm_bytes"]


@pytest.mark.slow
def test_a_replicated_4b_model_on_v5e_8_is_rejected_with_the_fix(tmp_path):
  """d4096-L24 with the default mesh copies all state to each 16 GiB chip: rejected before
  compiling, with the exact bytes and the sharding that would fix it."""
  code, out, report = run_check(tmp_path, "--config=configs/base.py:size=d4096-L24",
                                "--topology=v5e-8")
  assert code == 1, out[-3000:]
  assert report["verdict"] == "does not fit"
  assert report["params_bytes"] == 4 * param_count("d4096-L24", 32100)  # replicated: all of it
  assert report["opt_bytes"] == pytest.approx(2 * report["params_bytes"], abs=64)
  assert "DOES NOT FIT" in out and "compile skipped" in out
  assert "--config.mesh.data=1 --config.mesh.fsdp=-1" in out
  assert "--config.model.remat=full" in out


def test_a_batch_that_does_not_split_over_the_devices_is_rejected(tmp_path):
  code, out, report = run_check(tmp_path, "--config=configs/base.py:size=d64-L2,data=synthetic",
                                "--topology=v5e-8", *TINY, "--config.data.batch_size=12")
  assert code == 1, out[-3000:]
  assert report["verdict"] == "does not shard"
  assert "not divisible by the 8 data-parallel devices" in out


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed")
def test_libtpu_compiles_for_a_real_tpu_topology(tmp_path):
  code, out, report = run_check(
      tmp_path, "--config=configs/base.py:size=d64-L2,data=synthetic", "--topology=v4-8",
      *TINY, backend="tpu")
  assert code == 0, out[-3000:]
  assert report["backend"] == "tpu" and report["num_devices"] == 4
  assert "by libtpu" in out and "SIMULATED" not in out
