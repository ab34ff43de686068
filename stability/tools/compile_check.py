"""Will this config fit and shard on that slice? Ahead-of-time compile, no accelerator needed.

  python -m stability.tools.compile_check --config=configs/base.py:size=d2048-L24 --topology=v4-32
  python -m stability.tools.compile_check --config=configs/base.py:size=d4096-L24 --topology=v5e-8 \
      --config.mesh.data=1 --config.mesh.fsdp=-1 --config.model.remat=full

Lowers and compiles the train step for `--topology` (v4-32, v5e-8, v5p-128, v6e-16, 8xH100,
A100-40, ...) and prints the memory per device: parameters, optimizer state, batch, activations
and temporaries, against the device's HBM. Exits 1 with what to change when it does not fit or
does not shard.

- TPU topologies compile with libtpu (`pip install -e .[tpu]`; it runs without a TPU).
- Without libtpu, and for GPUs, the step is compiled for the same number of simulated CPU
  devices (this re-runs itself with `--xla_force_host_platform_device_count`): the sharding is
  checked for real and the state's memory exactly, but not the activations (XLA:CPU's
  temporaries are several times what the TPU compiler needs), so that verdict is "state fits".
- Parameter and optimizer-state bytes are exact on every backend: they follow from the shardings.
"""

import dataclasses
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags


def define_flags() -> None:
  """The command-line flags, defined only when this runs as a program: importing the module
  (tests, other tools) defines none, so it never clashes with another tool's `--config`."""
  global _CONFIG, _TOPOLOGY, _BACKEND, _DIAGNOSE, _REPORT
  _CONFIG = config_flags.DEFINE_config_file("config", None, "ml-collections config file[:arg]",
                                            lock_config=False, accept_new_attributes=True)
  _TOPOLOGY = flags.DEFINE_string(
      "topology", None, "target: v4-32, v5e-8 (= v5litepod-8), v5p-64, v6e-16, 8xH100, A100-80, ...")
  _BACKEND = flags.DEFINE_enum(
      "backend", "auto", ["auto", "tpu", "cpu"],
      "tpu: libtpu's compiler for the TPU topology; cpu: simulated CPU devices; auto: tpu if it can")
  _DIAGNOSE = flags.DEFINE_bool(
      "diagnose", False, "compile the diagnostics step (log steps) instead of the plain train step")
  _REPORT = flags.DEFINE_string("report", "", "also write the numbers as JSON to this path")
  flags.mark_flags_as_required(["config", "topology"])


GiB = 2**30
_CHILD_ENV = "STABILITY_COMPILE_CHECK_DEVICES"

# HBM per JAX device (a v4 / v5p megacore device is one chip).
HBM_GIB = {"v4": 32, "v5e": 16, "v5p": 95, "v6e": 32,
           "H100": 80, "H200": 141, "A100-40": 40, "A100-80": 80}
_TPU_KIND = {"v4": "TPU v4", "v5e": "TPU v5 lite", "v5p": "TPU v5", "v6e": "TPU v6 lite"}
# Chip grids of TPU slices: 3-D for v4 / v5p (by chips), 2-D for v5e / v6e.
_GRID_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
            256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_GRID_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
            256: "16x16"}
_GPUS_PER_HOST = 8
# The T5 SentencePiece vocabulary of C4 has 32000 pieces (plus data.c4.vocab_extra_ids).
_SENTENCEPIECE_PIECES = 32000


@dataclasses.dataclass(frozen=True)
class Topology:
  """A target slice: what the mesh is built from and what each device holds."""
  name: str              # as given: v4-32, 8xH100
  generation: str        # key of HBM_GIB
  platform: str          # tpu | gpu
  num_devices: int       # JAX devices (v4 / v5p: chips, megacore)
  num_hosts: int
  tpu_grid: str = ""     # libtpu topology name, e.g. v4:2x2x4
  chip_config: str = "default"
  host_bounds: tuple = (1, 1, 1)

  @property
  def hbm_bytes(self) -> int:
    return HBM_GIB[self.generation] * GiB

  @property
  def device_kind(self) -> str:
    return _TPU_KIND.get(self.generation, self.generation)


def parse_topology(name: str) -> Topology:
  """`v4-32` (TensorCores, as Cloud TPU names them), `v5e-8` (chips), `8xH100`, `A100-40`."""
  m = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", name.strip().lower())
  if m:
    gen, n = m.group(1).replace("v5litepod", "v5e"), int(m.group(2))
    if gen in ("v4", "v5p"):
      chips = n // 2
      grid = _GRID_3D.get(chips)
      prefix, chip_config, bounds = ("v4" if gen == "v4" else "v5"), "megacore", (2, 2, 1)
      hosts = max(1, chips // 4)
    else:
      chips = n
      grid = _GRID_2D.get(chips)
      prefix, chip_config = gen, "default"
      bounds = (1, 1, 1) if chips == 1 else (2, 4, 1) if chips == 8 else (2, 2, 1)
      hosts = 1 if chips <= 8 else chips // 4
    if grid is None:
      per_chip = 2 if gen in ("v4", "v5p") else 1
      grids = _GRID_3D if per_chip == 2 else _GRID_2D
      known = ", ".join(f"{gen}-{c * per_chip}" for c in sorted(grids))
      raise ValueError(f"--topology={name}: no known chip grid for {chips} {gen} chips; use one "
                       f"of {known}")
    return Topology(name, gen, "tpu", chips, hosts, f"{prefix}:{grid}", chip_config, bounds)
  m = re.fullmatch(r"(?:(\d+)x)?(h100|h200|a100(?:-40|-80)?)(?:x(\d+))?", name.strip().lower())
  if m:
    n = int(m.group(1) or m.group(3) or 1)
    gen = {"A100": "A100-80"}.get(m.group(2).upper(), m.group(2).upper())
    return Topology(name, gen, "gpu", n, math.ceil(n / _GPUS_PER_HOST))
  raise ValueError(f"--topology={name!r} is not a known target; use e.g. v4-32, v5e-8, v5p-64, "
                   "v6e-16, 8xH100, 16xH200, 8xA100-40")


# --- backends ---------------------------------------------------------------------------------


def _libtpu_version() -> str | None:
  if importlib.util.find_spec("libtpu") is None:
    return None
  try:
    return importlib.metadata.version("libtpu")
  except importlib.metadata.PackageNotFoundError:
    return "unknown version"


def tpu_devices(topo: Topology):
  """Compile-only devices of a TPU slice, from libtpu (no TPU needed)."""
  from jax.experimental import topologies
  desc = topologies.get_topology_desc(
      platform="tpu", topology_name=topo.tpu_grid, chip_config_name=topo.chip_config,
      chips_per_host_bounds=topo.host_bounds, num_slices=1)
  if len(desc.devices) != topo.num_devices:
    raise RuntimeError(f"libtpu made {len(desc.devices)} devices for {topo.tpu_grid}, "
                       f"expected {topo.num_devices}")
  return list(desc.devices)


def _reexec_with_cpu_devices(n: int) -> int:
  """Runs this command again with `n` simulated CPU devices; returns its exit code."""
  env = dict(os.environ)
  xla = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", ""))
  env.update(XLA_FLAGS=f"{xla} --xla_force_host_platform_device_count={n}".strip(),
             JAX_PLATFORMS="cpu", **{_CHILD_ENV: str(n)})
  cmd = [sys.executable, "-m", "stability.tools.compile_check", *sys.argv[1:], "--backend=cpu"]
  return subprocess.run(cmd, env=env, check=False).returncode


# --- memory accounting --------------------------------------------------------------------------


def bytes_per_device(abstract_tree) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (the largest shard)."""
  import jax
  import numpy as np
  total = 0
  for leaf in jax.tree_util.tree_leaves(abstract_tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += int(np.prod(shape, dtype=np.int64)) * np.dtype(leaf.dtype).itemsize
  return total


def host_feed_problem(run, host_of) -> str | None:
  """Each host feeds its own 1/H of the batch: its devices must hold exactly that many rows."""
  mesh = run.mesh
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  shards: dict[int, set] = {}
  for device, index in run.batch_sharding.devices_indices_map((dp, 1)).items():
    shards.setdefault(host_of(device), set()).add(index[0].indices(dp)[:2])
  hosts = len(shards)
  bad = {h: len(s) for h, s in shards.items() if len(s) * hosts != dp}
  if not bad:
    return None
  host, count = next(iter(bad.items()))
  return (f"with {hosts} hosts each reading 1/{hosts} of the batch, host {host}'s devices hold "
          f"{count} of the {dp} batch shards (mesh.data × mesh.fsdp = {dp}); make that product "
          f"a multiple of {hosts} and keep mesh.tensor within one host")


def _count(n: int) -> str:
  return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _gib(x: float) -> str:
  return f"{x / GiB:8.3f}"


def advice(config, topo: Topology, state: int, other: int) -> list[str]:
  """What to change, the biggest lever first."""
  out = []
  mesh, n = config.mesh, topo.num_devices
  if mesh.fsdp == 1 and mesh.tensor == 1 and n > 1:
    out.append(f"shard parameters and optimizer state over the {n} devices instead of copying them "
               f"to each: --config.mesh.data=1 --config.mesh.fsdp=-1 (state {state / GiB:.1f} -> "
               f"{state / n / GiB:.2f} GiB per device)")
  if other > 0.25 * topo.hbm_bytes or not out:
    if config.model.remat == "none":
      out.append("recompute activations in the backward pass: --config.model.remat=full "
                 "(or =dots)")
    out.append(f"split the batch into microbatches: --config.train.grad_accum="
               f"{2 * config.train.grad_accum} (same global batch, less activation memory)")
    out.append("or a smaller --config.data.batch_size (this changes the experiment)")
  out.append("or a larger slice")
  return out


# --- the check ----------------------------------------------------------------------------------


def _vocab_size(config) -> tuple[int, str]:
  if config.model.vocab_size:
    return config.model.vocab_size, "config"
  from stability import data as data_lib
  try:
    return data_lib.vocab_size(config.data), config.data.source
  except Exception:  # e.g. a gs:// SentencePiece file on a machine without access
    extra = config.data.c4.vocab_extra_ids
    return _SENTENCEPIECE_PIECES + extra, "T5 SentencePiece, assumed"


def _target_devices(topo: Topology, backend: str):
  """(devices, how they stand for the target in words, device -> host index)."""
  import jax
  if backend == "tpu":
    how = (f"compiled for {topo.name} by libtpu {_libtpu_version()} ahead of time "
           "(compile-only TPU devices; no TPU attached)")
    return tpu_devices(topo), how, lambda d: d.process_index
  devices = jax.devices()
  if len(devices) != topo.num_devices:
    raise RuntimeError(f"{len(devices)} CPU devices, expected {topo.num_devices}")
  reason = ("GPU targets have no compile-only backend here" if topo.platform == "gpu" else
            "libtpu is not installed; `pip install -e .[tpu]` compiles for the real TPU"
            if _libtpu_version() is None else "--backend=cpu")
  how = (f"SIMULATED: compiled for {topo.num_devices} CPU devices standing in for {topo.name} "
         f"({reason}); activation memory below is the CPU compiler's, not the target's")
  per_host = math.ceil(topo.num_devices / topo.num_hosts)
  return devices, how, lambda d: d.id // per_host


def _print_target(config, topo: Topology, vocab: int, vocab_from: str, how: str) -> None:
  from stability import flops
  m, d = config.model, config.data
  n_block = flops.non_embedding_params(m.d_model, m.num_layers, m.mlp_ratio)
  print(f"compile check: {m.size} ({_count(n_block)} non-embedding params, vocab {vocab} "
        f"from {vocab_from}), batch {d.batch_size} x {m.seq_len}, grad_accum "
        f"{config.train.grad_accum}, remat {m.remat}, {m.dtype} activations")
  print(f"target: {topo.name} = {topo.num_devices} x {topo.device_kind} "
        f"({topo.hbm_bytes / GiB:.0f} GiB HBM each), {topo.num_hosts} host(s)")
  print(f"how: {how}")


def _exact_bytes(run, config, report: dict):
  """(parameters, optimizer state, batch, abstract batch): exact bytes per device, printed."""
  import jax
  import jax.numpy as jnp
  state = run.abstract_state
  params, opt = bytes_per_device(state.params), bytes_per_device(state.opt_state)
  batch_abs = jax.ShapeDtypeStruct((config.data.batch_size, config.model.seq_len + 1), jnp.int32,
                                   sharding=run.batch_sharding)
  batch = bytes_per_device(batch_abs)
  report.update(params_bytes=params, opt_bytes=opt, batch_bytes=batch)
  print(f"  {'per device':38s} {'GiB':>8s}")
  _row("parameters (float32; exact)", params)
  _row("optimizer state (exact)", opt)
  _row("batch (exact)", batch)
  return params, opt, batch, batch_abs


def _compile(run, batch_abs, diagnose: bool, report: dict):
  """The compiled step's memory analysis, or the exception that stopped the compile."""
  t0 = time.time()
  try:
    with run.context():
      compiled = run.compiled_step(diagnose).lower(
          run.abstract_state, batch_abs, run.hypers).compile()
  except Exception as e:  # XlaRuntimeError (OOM, bad sharding), ValueError from jit
    return e
  report["compile_s"] = time.time() - t0
  return compiled.memory_analysis()


def _compile_failure(e: Exception, config, topo, state: int, report: dict) -> int:
  msg = str(e)
  if "RESOURCE_EXHAUSTED" in msg or "out of memory" in msg.lower():
    return _fail(report, "does not fit", msg.splitlines()[0][:500],
                 advice(config, topo, state, topo.hbm_bytes))
  return _fail(report, "does not shard", f"{type(e).__name__}: {msg[:1000]}")


def _total_bytes(mem, exact: int, backend: str, diagnose: bool, report: dict, hbm: int) -> int:
  """Prints the compiler's share and the total; returns (temporaries, total)."""
  temp = int(mem.temp_size_in_bytes)
  out_extra = max(0, int(mem.output_size_in_bytes) - int(mem.alias_size_in_bytes))
  code = int(mem.generated_code_size_in_bytes)
  _row("activations and temporaries", temp)
  _row("outputs not in donated buffers", out_extra)
  _row("generated code", code)
  summed = exact + temp + out_extra + code
  peak = int(getattr(mem, "peak_memory_in_bytes", 0) or 0)
  total = peak if backend == "tpu" and peak else summed
  report.update(temp_bytes=temp, total_bytes=total)
  _row(f"total ({'compiler' + chr(39) + 's peak' if total == peak else 'sum'})", total,
       f"  {total / hbm:.0%} of {hbm / GiB:.0f} GiB")
  print(f"compiled the {'diagnostics' if diagnose else 'train'} step in {report['compile_s']:.1f} "
        f"s; the compiler's argument bytes: {int(mem.argument_size_in_bytes) / GiB:.2f} GiB "
        f"(state + batch above: {exact / GiB:.2f} GiB)")
  return temp, total


def _verdict(config, topo, backend: str, state: int, exact: int, temp: int, total: int,
             report: dict) -> int:
  hbm = topo.hbm_bytes
  if backend == "cpu":  # XLA:CPU neither schedules nor reuses memory like the TPU/GPU compilers
    report["verdict"] = "state fits"
    print(f"verdict: SHARDS, and the exact state ({exact / GiB:.2f} GiB, {exact / hbm:.0%} of HBM) "
          "fits; activations NOT verified: the CPU compiler's temporaries are no measure of "
          "TPU/GPU memory (often several times larger). For a real verdict compile with libtpu "
          "(TPU targets) or run a few steps on one device.")
    if total > hbm:
      print("  if it runs out of memory there: " + "; ".join(advice(config, topo, state, temp)))
    return 0
  if total > hbm:
    return _fail(report, "does not fit", f"{total / GiB:.1f} GiB per device > "
                 f"{hbm / GiB:.0f} GiB HBM", advice(config, topo, state, temp))
  tight = " (tight: XLA and the runtime need some headroom)" if total > 0.9 * hbm else ""
  report["verdict"] = "fits"
  print(f"verdict: FITS, {(hbm - total) / GiB:.1f} GiB free per device{tight}")
  return 0


def check(config, topo: Topology, backend: str, diagnose: bool = False,
          report: dict | None = None) -> int:
  """Prints the report (and fills `report`); returns 0 (fits), 1 (does not fit or shard)."""
  report = {} if report is None else report
  from stability import run as run_lib
  from stability import validation

  validation.validate(config)
  devices, how, host_of = _target_devices(topo, backend)
  vocab, vocab_from = _vocab_size(config)
  _print_target(config, topo, vocab, vocab_from, how)
  report.update(topology=topo.name, backend=backend, num_devices=topo.num_devices)
  try:
    run = run_lib.Run([config], vocab, devices=devices)
  except ValueError as e:  # ConfigError, mesh shape
    return _fail(report, "does not shard", str(e))
  report["mesh"] = mesh = dict(run.mesh.shape)
  print(f"mesh: data={mesh['data']} fsdp={mesh['fsdp']} tensor={mesh['tensor']}")
  if problem := host_feed_problem(run, host_of):
    return _fail(report, "does not shard", problem)

  hbm = report["hbm_bytes"] = topo.hbm_bytes
  params, opt, batch, batch_abs = _exact_bytes(run, config, report)
  if params + opt > hbm:
    print("compile skipped: parameters and optimizer state alone exceed the device memory")
    return _fail(report, "does not fit", f"{(params + opt) / GiB:.1f} GiB of state per device > "
                 f"{hbm / GiB:.0f} GiB HBM", advice(config, topo, params + opt, hbm))
  mem = _compile(run, batch_abs, diagnose, report)
  if isinstance(mem, Exception):
    return _compile_failure(mem, config, topo, params + opt, report)
  temp, total = _total_bytes(mem, params + opt + batch, backend, diagnose, report, hbm)
  return _verdict(config, topo, backend, params + opt, params + opt + batch, temp, total, report)


def _row(name: str, value: int, extra: str = "") -> None:
  print(f"  {name:38s} {_gib(value)}{extra}")


def _fail(report: dict, what: str, why: str, fixes: list[str] | None = None) -> int:
  report.update(verdict=what, why=why, fixes=fixes or [])
  print(f"verdict: {what.upper()}: {why}")
  for fix in fixes or []:
    print(f"  - {fix}")
  return 1


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    topo = parse_topology(_TOPOLOGY.value)
  except ValueError as e:
    raise app.UsageError(str(e))
  backend = _BACKEND.value
  if backend == "auto":
    backend = "tpu" if topo.platform == "tpu" and _libtpu_version() else "cpu"
  if backend == "tpu" and (topo.platform != "tpu" or not _libtpu_version()):
    raise app.UsageError("--backend=tpu needs a TPU --topology and libtpu "
                         "(pip install -e .[tpu])")
  if backend == "cpu" and os.environ.get(_CHILD_ENV) != str(topo.num_devices):
    sys.exit(_reexec_with_cpu_devices(topo.num_devices))
  if backend == "tpu":
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # compiling holds no TPU: no lock
    import jax
    jax.config.update("jax_platforms", "cpu")  # host work on the CPU; libtpu only compiles
  report = {}
  code = check(_CONFIG.value, topo, backend, _DIAGNOSE.value, report)
  if _REPORT.value:
    with open(_REPORT.value, "w") as f:
      json.dump(report, f, indent=1)
  sys.exit(code)


if __name__ == "__main__":
  define_flags()
  app.run(main)
