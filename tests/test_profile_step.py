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
