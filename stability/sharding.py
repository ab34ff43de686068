"""Device mesh (data, fsdp, tensor), logical-axis rules, and multi-host start-up.

Parameters carry Flax logical axis names (`embed`, `heads`, `kv`, `mlp`, `vocab`, `norm`);
activations `batch`, `length`, `embed`. `config.mesh.logical_axis_rules` maps them onto the
mesh axes; unnamed ones are replicated. The same code runs on 1 CPU and on a pod slice.
"""

import os

from absl import logging
import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")


def maybe_initialize_distributed() -> None:
  """Starts `jax.distributed` on multi-host platforms; does nothing on one host.

  Detected: Cloud TPU pod slices (TPU worker env, or `STABILITY_DISTRIBUTED=1`, which
  `launch/tpu` sets: a TPU VM reached by ssh has no TPU worker env), SLURM jobs with several
  tasks, and an explicit coordinator (`JAX_COORDINATOR_ADDRESS` with `JAX_NUM_PROCESSES` and
  `JAX_PROCESS_ID`).
  """
  if getattr(maybe_initialize_distributed, "_done", False):
    return
  env = os.environ
  if env.get("JAX_COORDINATOR_ADDRESS") and int(env.get("JAX_NUM_PROCESSES", "1")) > 1:
    jax.distributed.initialize(
        coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(env["JAX_NUM_PROCESSES"]),
        process_id=int(env["JAX_PROCESS_ID"]))
  elif int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_STEP_ID" in env:
    jax.distributed.initialize()  # JAX reads the SLURM environment itself
  elif ("," in env.get("TPU_WORKER_HOSTNAMES", "") or env.get("MEGASCALE_COORDINATOR_ADDRESS")
        or env.get("STABILITY_DISTRIBUTED") == "1"):
    jax.distributed.initialize()  # Cloud TPU: JAX finds the coordinator itself
  maybe_initialize_distributed._done = True


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
  """Resolves a -1 in (data, fsdp, tensor) and checks that the product is the device count."""
  sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(
          f"config.mesh: {dict(zip(MESH_AXES, sizes))} cannot fill {num_devices} devices "
          f"({num_devices} is not divisible by {known}); make the fixed axes divide it")
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(
        f"config.mesh: data×fsdp×tensor = {'×'.join(map(str, sizes))} = {int(np.prod(sizes))} "
        f"but there are {num_devices} devices; set one axis to -1 to fill the rest")
  return tuple(sizes)


def make_mesh(mesh_cfg, devices=None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(mesh_cfg, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(shape, devices)
  except Exception:  # e.g. CPU devices without a topology
    grid = np.asarray(devices).reshape(shape)
  return Mesh(grid, MESH_AXES)


def logical_rules(mesh_cfg) -> tuple[tuple[str, object], ...]:
  return tuple((name, tuple(axes) if isinstance(axes, (list, tuple)) else axes)
               for name, axes in mesh_cfg.logical_axis_rules)


def shardings_of(boxed_tree, mesh: Mesh, rules) -> object:
  """NamedShardings for a tree of (abstract) values carrying logical partitioning metadata.

  A dimension that its mesh axes do not divide (the 259-id byte vocabulary over tensor=2) is
  replicated, with a warning, instead of failing at the first transfer.
  """
  specs = nn.get_partition_spec(boxed_tree)
  shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
  return jax.tree_util.tree_map_with_path(
      lambda path, s, x: _fit(s, x.shape, jax.tree_util.keystr(path)), shardings,
      nn.unbox(boxed_tree))


def _fit(sharding: NamedSharding, shape: tuple[int, ...], name: str) -> NamedSharding:
  spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
  fitted = []
  for dim, axes in zip(shape, spec):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    ways = int(np.prod([sharding.mesh.shape[a] for a in names]))
    if dim % ways:
      logging.warning("%s: dimension %d is not divisible by mesh axes %s (%d ways); replicated",
                      name, dim, names, ways)
      axes = None
    fitted.append(axes)
  return NamedSharding(sharding.mesh, P(*fitted))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split over every data-parallel axis (data and fsdp)."""
  return NamedSharding(mesh, P(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
