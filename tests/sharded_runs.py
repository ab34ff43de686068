"""Trains the tiny config on three 8-device meshes and prints each one's parameter shardings.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m tests.sharded_runs OVERRIDES WORKDIR

A process of its own: the number of CPU devices is fixed when JAX starts, and the rest of the
suite runs on one. Prints `RESULT{json}`: per mesh, per parameter, its partition spec, its shard
shapes, whether Adam's μ is sharded like it, and the run's final status.
"""

import json
import sys

import jax

from stability import run as run_lib
from stability import train
from tests.test_train import SHARD_SIZE, VOCAB, tiny_config

MESHES = ((8, 1, 1), (2, 4, 1), (2, 2, 2))  # (data, fsdp, tensor)
PARAMS = ("block_0/mlp/wi/kernel", "embed/embedding", "head/kernel")


def shardings(state) -> dict:
  out = {}
  for path in PARAMS:
    x, mu = state.params, state.opt_state[1].mu
    for key in path.split("/"):
      x, mu = x[key], mu[key]
    out[path] = {
        "spec": [a if a is None or isinstance(a, str) else list(a) for a in x.sharding.spec],
        "mu_same": mu.sharding == x.sharding,
        "shards": sorted({tuple(s.data.shape) for s in x.addressable_shards}),
    }
  return out


def main(overrides: dict, workdir: str) -> dict:
  assert jax.device_count() == 8, jax.devices()
  out = {}
  for data, fsdp, tensor in MESHES:
    mesh = {"mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor}
    config = tiny_config({**overrides, **mesh}, size=SHARD_SIZE)
    name = f"{data}x{fsdp}x{tensor}"
    out[name] = shardings(run_lib.Run([config], VOCAB).init_state(0))
    out[name]["status"] = train.train_and_evaluate(config, f"{workdir}/{name}")["status"]
  return out


if __name__ == "__main__":
  print("RESULT" + json.dumps(main(json.loads(sys.argv[1]), sys.argv[2])))
