"""`python -m stability.tools.profile_step`: op names are grouped by model part, end to end."""

import re
import subprocess
import sys

import pytest

from stability.tools import profile_step
from tests.test_train import REPO


@pytest.mark.parametrize(("op_name", "group"), [
    ("jit(_step)/transpose(jvp(Decoder))/block_0/mlp/add_any", "MLP"),
    ("jit(_step)/jvp(Decoder)/block_2/attn/wq/dot_general", "attention"),
    ("jit(_step)/jvp(Decoder)/head/dot_general", "head + loss"),
    ("jit(_step)/jvp()/while/body/closed_call/nd,nv->dv/dot_general", "head + loss"),
    ("jit(_step)/jvp()/reduce_max", "head + loss"),
    ("jit(_step)/jvp(Decoder)/ln_final/mul", "layer norms"),
    ("jit(_step)/jvp(Decoder)/embed/gather", "embedding"),
    ("jit(_step)/add", "optimizer + clipping"),
])
def test_ops_are_grouped_by_the_code_that_made_them(op_name, group):
  assert profile_step.group_of(op_name) == group


@pytest.mark.slow
def test_profile_prints_every_part():
  cmd = [sys.executable, "-m", "stability.tools.profile_step", "--size=d32-L1", "--vocab=64",
         "--head_impl=fused", "--batch=4", "--seq_len=16", "--steps=2", "--top=3"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  rows = dict(re.findall(r"^\| ([a-z +A-Z]+) \| [0-9.]+ \| ([0-9.]+)% \|$", proc.stdout, re.M))
  assert {"attention", "MLP", "head + loss", "optimizer + clipping"} <= set(rows), proc.stdout
  assert abs(sum(map(float, rows.values())) - 100) < 1
  top = re.findall(r"^ +[0-9.]+ ms +[0-9.]+%  \S+  jit\(", proc.stdout, re.M)
  assert len(top) == 3, proc.stdout  # the three longest ops, each with the code it came from


def test_a_mistyped_model_value_is_refused():
  cmd = [sys.executable, "-m", "stability.tools.profile_step", "--size=d32-L1", "--vocab=64",
         "--model=qk_layernorm=true"]  # not per_head | full_width | off
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and "config.model.qk_layernorm='true' is invalid" in proc.stderr


def test_control_flow_is_left_out_of_the_op_names():
  """A loop's event spans the ops inside it: counting both would count its body twice."""
  hlo = "\n".join([
      '  %dot.3 = f32[4,8]{1,0} dot(%a, %b), metadata={op_name="jit(_step)/jvp(Decoder)/head/dot"}',
      '  %while.9 = (s32[], f32[4]) while(%t), condition=%c, body=%b, '
      'metadata={op_name="jit(_step)/jvp()/while"}',
      '  ROOT %custom-call.2 = bf16[4] custom-call(%x), custom_call_target="f", '
      'metadata={op_name="jit(_step)/jvp(Decoder)/block_0/attn/dpa"}',
  ])
  assert profile_step.names_in_hlo(hlo) == {
      "dot.3": "jit(_step)/jvp(Decoder)/head/dot",
      "custom-call.2": "jit(_step)/jvp(Decoder)/block_0/attn/dpa"}


class _Event:
  def __init__(self, name, ns, **stats):
    self.name, self.duration_ns, self.stats = name, ns, list(stats.items())


class _Plane:
  def __init__(self, name, events):
    self.name, self.lines = name, [type("Line", (), {"events": events})()]


def test_gpu_kernels_count_by_their_op_and_the_rest_is_unattributed():
  names = {"fusion.1": "jit(_step)/jvp(Decoder)/block_0/mlp/wi/dot", "dot.2": "jit(_step)/add"}
  data = type("Data", (), {"planes": [
      _Plane("/host:CPU", [_Event("fusion.1", 9e6)]),  # host side: not the kernel's time
      _Plane("/device:GPU:0", [_Event("sm90_gemm", 2e6, hlo_op="fusion.1"),
                               _Event("loop_kernel", 1e6, hlo_op="fusion.1"),
                               _Event("dot.2", 4e6),
                               _Event("memcpy", 3e6)])]})()
  times = profile_step.op_times(data, names, steps=1)
  assert times == {"fusion.1": 3.0, "dot.2": 4.0, "memcpy": 3.0}
  assert profile_step.by_group(times, names) == {
      "MLP": 3.0, "optimizer + clipping": 4.0, profile_step.UNATTRIBUTED: 3.0}
