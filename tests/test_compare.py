"""analysis.compare: two sweeps of one grid, point by point and in LR sensitivity."""

import pytest

from analysis import compare
from tests._runs_fixture import INIT_LOSS, make_sweep

A = {("qkln-on", "d64-L2"): {1e-3: 3.0, 1e-2: 2.5, 1e-1: ("diverged", None)}}
B = {("qkln-on", "d64-L2"): {1e-3: 3.0, 1e-2: 2.6, 1e-1: 4.0}}


def test_point_gaps_and_sensitivity_by_hand(tmp_path):
  a = compare.finished(str(make_sweep(tmp_path / "a", A)))
  b = compare.finished(str(make_sweep(tmp_path / "b", B)))
  gaps = compare.point_gaps(a, b).reset_index().set_index("lr")
  assert gaps.loc[1e-3, "gap"] == 0.0
  assert gaps.loc[1e-2, "gap"] == pytest.approx(0.1)
  assert gaps.loc[1e-1, "loss_a"] == INIT_LOSS  # a diverged run counts as ℓ0
  assert gaps.loc[1e-1, "gap"] == pytest.approx(4.0 - INIT_LOSS)
  assert list(gaps["status_b"]) == ["done"] * 3 and gaps.loc[1e-1, "status_a"] == "diverged"

  pairs = compare.sensitivity_pairs(a, b).loc[("qkln-on", "d64-L2")]
  # E over LRs of min(loss, ℓ0) − best loss
  assert pairs["a"] == pytest.approx((0.5 + 0.0 + (INIT_LOSS - 2.5)) / 3)
  assert pairs["b"] == pytest.approx((0.4 + 0.0 + 1.4) / 3)
  assert pairs["change"] == pytest.approx(pairs["b"] - pairs["a"])


def test_report_names_the_flipped_point(tmp_path, capsys):
  compare.main([str(make_sweep(tmp_path / "a", A)), str(make_sweep(tmp_path / "b", B))])
  out = capsys.readouterr().out
  assert "status differs at 1 points" in out and "diverged" in out
  assert "over 3 points" in out


def test_headline_holds_under_one_core_rounding():
  """The committed Fig 1 runs made on one core (docs/measured/one-core-fig1-2026-11-28) against
  the two-thread reference: qk-layernorm at most halves the seed-mean LR sensitivity in both,
  and the ratio moves by less than its seed-to-seed range."""
  import os
  from analysis import evidence as ev
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  ratios = {}
  for name, path in [("two", "reference/cpu/fig1_qk_layernorm"),
                     ("one", "docs/measured/one-core-fig1-2026-11-28/fig1_qk_layernorm")]:
    runs = compare.finished(os.path.join(root, path))
    table = ev.mean_sensitivity(runs[runs["size"].isin(["d64-L2", "d128-L2"])])
    by = table.set_index(["arm", "size"])["sensitivity"]
    ratios[name] = by["qkln-on"] / by["qkln-off"]
  assert (ratios["one"] <= 0.5).all() and (ratios["two"] <= 0.5).all(), ratios
  assert ((ratios["one"] - ratios["two"]).abs() < 0.06).all(), ratios  # seed ranges 0.06, 0.10
