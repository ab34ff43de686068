r"""Where a train step's time goes: a profile of a few steps, grouped by the part of the model.

  python -m stability.tools.profile_step --size=d256-L3 --vocab=32101 --head_impl=fused \
      --batch=16 --seq_len=128 [--dtype=float32] [--steps=5]

Each XLA op of the compiled step is named after the code that made it (its `op_name`: module
path, and `jvp`/`transpose` for the forward and backward passes). The op times of the profiled
steps are summed by group: attention, MLP, layer norms, embedding, the head with the loss, and the
optimizer with clipping (what runs outside the differentiated model). The sums are op time on
every device thread together, not wall time: on two CPU threads they exceed the step's wall time
where both threads are busy and fall short where one waits. On a GPU they are kernel times, with
CUDA graphs off so that each kernel keeps the name of its op.
"""

import collections
import os
import re
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np

from stability import config_schema
from stability import run as run_lib
from stability import runtime
from stability import sizes
from stability import validation


def define_flags() -> None:
  """The command-line flags, defined only when this runs as a program: importing the module
  (the tests) defines none, so it never clashes with another tool's flags."""
  global _SIZE, _VOCAB, _HEAD, _BATCH, _SEQ_LEN, _DTYPE, _STEPS, _TOP, _MODEL_SET
  _SIZE = flags.DEFINE_string("size", "d256-L3", "model size")
  _VOCAB = flags.DEFINE_integer("vocab", 32101, "vocabulary size (synthetic tokens)")
  _HEAD = flags.DEFINE_enum("head_impl", "plain", ["plain", "fused"], "model.head_impl")
  _BATCH = flags.DEFINE_integer("batch", 16, "global batch (sequences)")
  _SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "sequence length")
  _DTYPE = flags.DEFINE_enum("dtype", "auto", ["auto", "float32", "bfloat16"],
                             "compute dtype; auto = float32 on CPU, bfloat16 on accelerators")
  _STEPS = flags.DEFINE_integer("steps", 5, "profiled steps (after 3 warm-up steps)")
  _TOP = flags.DEFINE_integer("top", 0, "also list the N ops with the most time, and their code")
  _MODEL_SET = flags.DEFINE_multi_string(
      "model", [], "other model.<key>=<value>, e.g. --model=attention_impl=fused "
      "--model=remat=dots --model=head_chunk_tokens=16384")


# (group, pattern of op_name), the first match wins.
GROUPS = (
    ("attention", re.compile(r"/attn/")),
    ("MLP", re.compile(r"/mlp/")),
    ("head + loss", re.compile(r"/head/|while/body")),
    ("layer norms", re.compile(r"/ln_")),
    ("embedding", re.compile(r"/embed/")),
    ("other model", re.compile(r"Decoder")),
    ("head + loss", re.compile(r"jvp\(")),  # the loss is differentiated outside the model
)
OPTIMIZER = "optimizer + clipping"
UNATTRIBUTED = "unattributed (GPU kernels with no op of the step)"


def group_of(op_name: str) -> str:
  return next((group for group, pattern in GROUPS if pattern.search(op_name)), OPTIMIZER)


def bench_config():
  c = config_schema.default_config()
  sizes.apply(c.model, _SIZE.value)
  c.data.source = "synthetic"
  c.data.synthetic.vocab_size = _VOCAB.value
  dtype = _DTYPE.value
  if dtype == "auto":
    dtype = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  c.model.update(seq_len=_SEQ_LEN.value, dtype=dtype, head_impl=_HEAD.value)
  for item in _MODEL_SET.value:
    key, value = item.split("=", 1)
    current = c.model[key]
    is_bool = isinstance(current, bool)
    c.model[key] = value.lower() in ("1", "true") if is_bool else type(current)(value)
  c.data.batch_size = _BATCH.value
  c.opt.warmup_steps, c.train.steps = 10, 1000
  validation.validate(c)  # a mistyped --model value is refused, not profiled as another model
  return c


def op_names(run, state, batch) -> dict[str, str]:
  """Compiled instruction name -> the op_name of the code it came from. Control flow (a loop, a
  branch, a call) is left out: its events span the ops inside it, which are counted themselves."""
  with run.context():
    hlo = run.compiled_step(False).lower(state, batch, run.hypers).compile().as_text()
  return names_in_hlo(hlo)


def names_in_hlo(hlo: str) -> dict[str, str]:
  """Instruction name -> op_name, for every instruction of `hlo` but control flow."""
  pattern = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]+)\"")
  control_flow = re.compile(r"(?<![\w-])(while|conditional|call)\(")
  return {m.group(1): m.group(2) for line in hlo.splitlines()
          if (m := pattern.match(line)) and not control_flow.search(line)}


def profile(run, state, batch, steps: int) -> tuple[jax.profiler.ProfileData, float]:
  """A trace of `steps` train steps (after warm-up), and their wall time per step."""
  for _ in range(3):
    state, metrics = run.train_step(state, batch, diagnose=False)
  jax.block_until_ready(metrics)
  folder = tempfile.mkdtemp(prefix="stability-profile-")
  jax.profiler.start_trace(folder)
  start = time.perf_counter()
  for _ in range(steps):
    state, metrics = run.train_step(state, batch, diagnose=False)
  jax.block_until_ready(metrics)
  wall_ms = (time.perf_counter() - start) * 1e3 / steps
  jax.profiler.stop_trace()
  paths = [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files
           if f.endswith(".xplane.pb")]
  return jax.profiler.ProfileData.from_file(sorted(paths)[-1]), wall_ms


def op_times(data, names: dict[str, str], steps: int) -> collections.Counter:
  """Milliseconds per step of each op of the compiled step. On a GPU every kernel of the trace
  (its op is the `hlo_op` stat; kernels without one are reported as unattributed); on a CPU the
  host's events named after an instruction."""
  gpu_planes = [p for p in data.planes if p.name.startswith("/device:GPU")]
  times = collections.Counter()
  for plane in gpu_planes or data.planes:
    for line in plane.lines:
      for event in line.events:
        op = dict(event.stats).get("hlo_op", event.name)
        if gpu_planes or op in names:
          times[op] += event.duration_ns / 1e6 / steps
  return times


def by_group(times: collections.Counter, names: dict[str, str]) -> collections.Counter:
  grouped = collections.Counter()
  for op, ms in times.items():
    grouped[group_of(names[op]) if op in names else UNATTRIBUTED] += ms
  return grouped


def main(argv):
  del argv
  # On a GPU, XLA replays most of the step as CUDA graphs ("command buffers"), whose kernels the
  # trace names after the graph, not the op: profile with them off (set before JAX starts).
  flags_now = os.environ.get("XLA_FLAGS", "")
  if "xla_gpu_enable_command_buffer" not in flags_now:
    os.environ["XLA_FLAGS"] = f"{flags_now} --xla_gpu_enable_command_buffer=".strip()
  runtime.keep_freed_host_memory()  # as training has it
  run = run_lib.Run([bench_config()], _VOCAB.value)
  state = run.init_state(0)
  tokens = np.random.default_rng(0).integers(0, _VOCAB.value, (_BATCH.value, _SEQ_LEN.value + 1))
  batch = run.global_batch(tokens.astype(np.int32))
  names = op_names(run, state, batch)
  data, wall_ms = profile(run, state, batch, _STEPS.value)
  times = op_times(data, names, _STEPS.value)
  grouped = by_group(times, names)
  total = sum(grouped.values())
  m = run.config.model
  print(f"{_SIZE.value}, vocab {_VOCAB.value}, head {m.head_impl}, {m.dtype}, batch "
        f"{_BATCH.value}×{_SEQ_LEN.value} on {jax.devices()[0].device_kind}: {wall_ms:.0f} ms "
        f"per step (wall), {total:.0f} ms of op time on all threads")
  print("| part | op ms / step | share |\n|---|---|---|")
  for group, ms in grouped.most_common():
    print(f"| {group} | {ms:.1f} | {ms / total:.1%} |")
  for op, ms in times.most_common(_TOP.value):
    print(f"{ms:8.1f} ms {ms / total:6.1%}  {op}  {names.get(op, '?')}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
