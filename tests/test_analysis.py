"""analysis/: LR sensitivity by hand arithmetic, robust loading, the Fig 9 fit, figures, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import pathlib

import numpy as np
import pandas as pd
import pytest

from analysis import figures, prediction, report, results, sensitivity
from tests._runs_fixture import INIT_LOSS, make_sweep, run_name, write_run, write_sweep

NAN = math.nan
GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
REPO = pathlib.Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# LR sensitivity


def test_lr_sensitivity_single_range_by_hand():
  # ℓ0 = 10. Losses on the grid; 1e-2 missing; 3e-2 above ℓ0; 1e-1 NaN; 1e-4 outside the range.
  lrs = [1e-4, 3e-4, 1e-3, 3e-3, 3e-2, 1e-1, 3e-1]
  losses = [2.0, 4.0, 3.5, 3.2, 11.0, NAN, 5.0]
  # In range, clipped: 4.0, 3.5, 3.2, 10, 10, 5.0; ℓ* = 3.2
  # gaps: 0.8 + 0.3 + 0 + 6.8 + 6.8 + 1.8 = 16.5 over 6 runs = 2.75
  result = sensitivity.lr_sensitivity(lrs, losses, 10.0)
  assert result.sensitivity == pytest.approx(2.75)
  assert result.best_lr == pytest.approx(3e-3)
  assert result.best_loss == pytest.approx(3.2)
  assert (result.n_runs, result.n_diverged) == (6, 1)


def test_lr_sensitivity_is_zero_when_every_lr_fails():
  result = sensitivity.lr_sensitivity(GRID, [NAN] * 7, 10.0)
  assert result.sensitivity == 0.0
  assert math.isnan(result.best_lr)
  assert result.n_diverged == 7


def test_diverged_status_counts_as_init_loss_even_with_a_finite_loss():
  # The 1e-2 run diverged but wrote 4.0: it counts as ℓ0 = 10. ℓ* = 3; gaps 0 + 7 = 7, / 2.
  result = sensitivity.lr_sensitivity([1e-3, 1e-2], [3.0, 4.0], 10.0,
                                      diverged=[False, True])
  assert result.sensitivity == pytest.approx(3.5)


def test_sensitivity_table_from_a_sweep_folder(tmp_path):
  sweep = make_sweep(tmp_path, {
      ("qkln-off", "d64-L2"): {1e-4: 2.0, 3e-4: 4.0, 1e-3: 3.5, 3e-3: 3.2, 1e-2: None,
                               3e-2: 11.0, 1e-1: ("diverged", NAN), 3e-1: 5.0},
      ("qkln-on", "d64-L2"): {3e-4: 4.0, 1e-3: 3.0, 3e-3: ("running", 9.0)},
      ("qkln-on", "d128-L2"): {3e-4: 4.0, 1e-3: 3.0, 3e-3: ("failed", NAN)},
  })
  with pytest.warns(UserWarning):
    runs = results.load_runs(sweep)
    table = sensitivity.sensitivity_table(runs)
  assert any("no results yet" in p and "lr1e-02" in p for p in runs.attrs["problems"])
  row = table.set_index(["arm", "size"]).loc[("qkln-off", "d64-L2")]
  assert row["sensitivity"] == pytest.approx(2.75)  # the arithmetic of the test above
  assert row["best_lr"] == pytest.approx(3e-3)
  assert row["init_loss"] == pytest.approx(INIT_LOSS)
  assert (row["n_runs"], row["n_diverged"]) == (6, 1)
  assert row["num_params"] == 12 * 2 * 64 * 64
  # running and failed runs are left out (not counted as diverged): ℓ* = 3; gaps 1 + 0, / 2.
  for size in ("d64-L2", "d128-L2"):
    on = table.set_index(["arm", "size"]).loc[("qkln-on", size)]
    assert on["sensitivity"] == pytest.approx(0.5)
    assert (on["n_runs"], on["n_diverged"]) == (2, 0)
  assert any("running" in p for p in table.attrs["problems"])
  assert any("failed" in p for p in table.attrs["problems"])
  assert list(table["arm"]) == ["qkln-off", "qkln-on", "qkln-on"]
  assert list(table["size"]) == ["d64-L2", "d64-L2", "d128-L2"]


COUPLED_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)


def test_min_of_ranges_on_an_8_lr_coupled_sweep(tmp_path):
  low = [3.0, 2.8, 2.9, 3.3, 4.0, 6.0, 9.0, ("diverged", NAN)]
  high = [9.5, 4.0, 3.0, 2.5, 2.4, 2.6, 3.0, 3.5]
  sweep = make_sweep(
      tmp_path,
      {("coupled-a", "d64-L2"): dict(zip(COUPLED_LRS, low)),
       ("coupled-b", "d64-L2"): dict(zip(COUPLED_LRS, high))},
      sensitivity={"rule": "min_of_ranges", "ranges": [[1e-4, 1e-1], [3e-4, 3e-1]]})
  table = sensitivity.sensitivity_table(results.load_runs(sweep)).set_index("arm")
  # coupled-a. [1e-4, 1e-1]: ℓ* 2.8, gaps .2 0 .1 .5 1.2 3.2 6.2 = 11.4 -> 11.4/7
  #            [3e-4, 3e-1]: ℓ* 2.8, gaps 0 .1 .5 1.2 3.2 6.2 7.2 = 18.4 -> 18.4/7; min: 11.4/7
  a = table.loc["coupled-a"]
  assert a["sensitivity"] == pytest.approx(11.4 / 7)
  assert a["best_lr"] == pytest.approx(3e-4)
  assert a["lr_range"] == "1e-04..1e-01"
  assert (a["rule"], a["n_runs"], a["n_diverged"]) == ("min_of_ranges", 7, 0)
  # coupled-b. [1e-4, 1e-1]: ℓ* 2.4, gaps 7.1 1.6 .6 .1 0 .2 .6 = 10.2 -> 10.2/7
  #            [3e-4, 3e-1]: ℓ* 2.4, gaps 1.6 .6 .1 0 .2 .6 1.1 = 4.2 -> 0.6; min: 0.6
  b = table.loc["coupled-b"]
  assert b["sensitivity"] == pytest.approx(0.6)
  assert b["best_lr"] == pytest.approx(1e-2)
  assert b["lr_range"] == "3e-04..3e-01"


def test_rule_precedence_and_coupled_default(tmp_path):
  losses = dict(zip(COUPLED_LRS, [3.0, 2.8, 2.9, 3.3, 4.0, 6.0, 9.0, ("diverged", NAN)]))
  sweep = make_sweep(tmp_path, {("indep", "d64-L2"): losses, ("coupled", "d64-L2"): losses},
                     sensitivity={"rule": "single", "ranges": [[3e-4, 3e-1]],
                                  "arms": {"coupled": {"rule": "min_of_ranges"}}})
  table = sensitivity.sensitivity_table(results.load_runs(sweep)).set_index("arm")
  assert table.loc["indep", "sensitivity"] == pytest.approx(18.4 / 7)
  assert table.loc["coupled", "sensitivity"] == pytest.approx(11.4 / 7)
  # With no rule in sweep.json, coupled weight decay in the config selects min_of_ranges.
  runs = results.load_runs(sweep)
  runs.attrs["sweep"] = {}
  runs["opt.weight_decay_mode"] = np.where(runs["arm"] == "coupled", "coupled", "independent")
  table = sensitivity.sensitivity_table(runs).set_index("arm")
  assert table.loc["coupled", "rule"] == "min_of_ranges"
  assert table.loc["indep", "rule"] == "single"


# ---------------------------------------------------------------------------------------------
# Loading


def test_load_runs_survives_corrupt_files(tmp_path):
  write_run(tmp_path, "good", lr=1e-3, final_loss=3.0)
  bad_metrics = write_run(tmp_path, "bad-metrics", lr=3e-3, final_loss=3.5)
  lines = (bad_metrics / "metrics.jsonl").read_text().splitlines()
  lines[3] = "{not json"
  lines.append('{"step": 3100, "train_loss": 1.')  # a killed writer's torn last line
  lines.append('{"step": 3200, "train_loss": NaN, "grad_norm": Infinity}')
  (bad_metrics / "metrics.jsonl").write_text("\n".join(lines) + "\n")
  bad_summary = write_run(tmp_path, "bad-summary", lr=1e-2, final_loss=3.2)
  (bad_summary / "summary.json").write_text('{"status": "done", "final_eval_')
  with pytest.warns(UserWarning):
    runs = results.load_runs(tmp_path)
  assert sorted(runs["name"]) == ["bad-metrics", "bad-summary", "good"]
  by_name = runs.set_index("name")
  assert by_name.loc["bad-summary", "status"] == "unknown"
  assert by_name.loc["bad-summary", "init_eval_loss"] == INIT_LOSS  # from eval.jsonl step 0
  assert by_name.loc["bad-summary", "lr"] == 1e-2  # from config.json
  assert any("bad-summary" in p and "summary.json" in p for p in runs.attrs["problems"])
  assert by_name.loc["good", "model.qk_layernorm"] == "per_head"
  assert by_name.loc["good", "arm"] == "good"  # no sweep.json: arm from the run name
  with pytest.warns(UserWarning, match="2 corrupt line"):
    metrics = results.load_metrics(by_name.loc["bad-metrics", "run_dir"])
  assert len(metrics) == 31 - 1 + 1  # 31 rows, one corrupted, one NaN/Infinity row added
  assert math.isnan(metrics["train_loss"].iloc[-1])
  assert metrics["grad_norm"].iloc[-1] == math.inf
  with pytest.warns(UserWarning):
    table = sensitivity.sensitivity_table(runs)
  assert set(table["arm"]) == {"good", "bad-metrics"}
  assert any("bad-summary" in p and "unknown" in p for p in table.attrs["problems"])


def test_arm_from_run_name():
  assert results.arm_from_name("d256-L3_lr1e-02_qkln-off", "d256-L3") == "qkln-off"
  assert results.arm_from_name("d256-L3_lr3e-04", "d256-L3") == "default"


def test_metric_at_step_and_final_mean(tmp_path):
  run = write_run(tmp_path, "r", metrics=lambda s: {"m": float(s)}, steps=range(0, 3001, 300))
  metrics = results.load_metrics(run)
  assert results.value_at_step(metrics, "m", 2000) == (1800.0, 1800)  # last logged step ≤ 2000
  assert results.value_at_step(metrics, "m", 2100) == (2100.0, 2100)
  value, step = results.value_at_step(metrics, "m", 2000, max_gap=100)  # 1800 is too far back
  assert math.isnan(value) and step is None
  # final 500 steps of a run ending at 3000: steps 2700 and 3000
  assert results.final_mean(metrics, "m", 500) == pytest.approx(2850.0)
  assert math.isnan(results.final_mean(metrics, "absent", 500))


# ---------------------------------------------------------------------------------------------
# Fig 9 prediction


def _log_logit(x):  # log10(max logit) = 0.25 (x − 6)² + 1, x = log10 N
  return 0.25 * (x - 6) ** 2 + 1


def test_quadratic_fit_recovers_coefficients_and_crossing():
  n = 10.0 ** np.array([6.0, 6.5, 7.0, 7.5, 8.0])
  coefs = prediction.fit_quadratic(n, 10.0 ** _log_logit(np.log10(n)))
  np.testing.assert_allclose(coefs, [0.25, -3.0, 10.0], rtol=1e-8, atol=1e-8)
  # 0.25 (x − 6)² + 1 = 4  ->  x = 6 + 2√3
  assert prediction.crossing_params(coefs, 1e4, 1e6) == pytest.approx(10 ** (6 + 2 * 3 ** .5))
  assert prediction.crossing_params(coefs, 1e4, 1e10) == 1e10  # already above at the start
  assert prediction.crossing_params(np.array([-0.1, 0.0, 2.0]), 1e4, 1e6) is None  # never


def test_predict_divergence_from_runs(tmp_path):
  points = []
  for x in (6.0, 6.5, 7.0, 7.5):
    logit = 10.0 ** _log_logit(x)
    log_at = 1900 if x == 7.0 else 2000  # nearest logged step before 2000 is used
    name = f"x{x}"
    write_run(tmp_path, name, num_params=10 ** x, lr=1e-2, cfg=None,
              metrics=[{"step": 1000, "attn_logit_max/block_0": 1.0},
                       {"step": log_at, "attn_logit_max/block_0": logit},
                       {"step": 2500, "attn_logit_max/block_0": 1e9}])
    points.append({"name": name, "arm": "qkln-off", "size": "d64-L2", "lr": 1e-2})
  predicted = 10.0 ** _log_logit(9.5)  # 0.25·3.5² + 1 = 4.0625 -> 11548 > 1e4
  write_run(tmp_path, "target", num_params=10 ** 9.5, lr=1e-2, status="diverged",
            final_loss=None, diverged_at_step=2300,
            metrics=[{"step": 2000, "attn_logit_max/block_0": 1.2 * predicted}])
  points.append({"name": "target", "arm": "qkln-off", "size": "d4096-L24", "lr": 1e-2})
  write_sweep(tmp_path, points)
  logits = prediction.max_logit_points(results.load_runs(tmp_path))
  assert logits.set_index("name").loc["x7.0", "max_logit_step"] == 1900
  table = prediction.predict_divergence(logits, target_params=10 ** 9.5)
  row = table.iloc[0]
  assert row["n_fit"] == 4
  np.testing.assert_allclose([row["c2"], row["c1"], row["c0"]], [0.25, -3, 10], atol=1e-6)
  assert row["crossing_params"] == pytest.approx(10 ** (6 + 2 * 3 ** .5), rel=1e-6)
  assert row["predicted_max_logit"] == pytest.approx(predicted, rel=1e-6)
  assert row["predicted_diverges"] and row["measured_diverged"] and row["confirmed"]
  assert row["ratio"] == pytest.approx(1.2, rel=1e-6)
  assert row["logit_near_prediction"]
  fig = figures.max_logit_vs_params(logits, table, save_to=tmp_path / "fig9")
  ax = fig.axes[0]
  assert (ax.get_xscale(), ax.get_yscale()) == ("log", "log")
  assert ax.get_ylabel() == "max attention logit (block 0, step 2000)"
  assert any(list(line.get_ydata()) == [1e4, 1e4] for line in ax.get_lines())
  assert (tmp_path / "fig9.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------
# Figures and the report


def _demo_sweep(root: pathlib.Path) -> pathlib.Path:
  return make_sweep(root, {
      ("qkln-off", "d64-L2"): {3e-4: 4.0, 1e-3: 3.5, 3e-3: 3.2, 1e-2: 3.4, 3e-2: 4.5,
                               1e-1: ("diverged", NAN), 3e-1: ("diverged", NAN)},
      ("qkln-off", "d128-L2"): {3e-4: 3.8, 1e-3: 3.3, 3e-3: 3.0, 1e-2: 3.6,
                                3e-2: ("diverged", NAN), 1e-1: ("diverged", NAN),
                                3e-1: ("diverged", NAN)},
      ("qkln-on", "d64-L2"): dict(zip(GRID, [4.0, 3.5, 3.2, 3.1, 3.2, 3.4, 3.8])),
      ("qkln-on", "d128-L2"): dict(zip(GRID, [3.8, 3.3, 3.0, 2.9, 3.0, 3.2, 3.7])),
  }, experiment="fig1_qk_layernorm")


def test_figures_have_the_right_axes(tmp_path):
  runs = results.load_runs(_demo_sweep(tmp_path / "sweep"))
  fig = figures.loss_vs_lr(runs, save_to=tmp_path / "loss")
  assert [ax.get_title() for ax in fig.axes] == ["qkln-off", "qkln-on"]
  assert fig.axes[0].get_xscale() == "log"
  assert fig.axes[0].get_xlabel() == "peak learning rate"
  assert fig.axes[0].get_ylabel() == "final eval loss"
  assert any(line.get_ydata()[0] == INIT_LOSS for line in fig.axes[0].get_lines())  # ℓ0 line
  assert "fig1_qk_layernorm" in fig.texts[-1].get_text()  # footnote
  assert "warmup_steps=100" in fig.texts[-1].get_text()
  table = sensitivity.sensitivity_table(runs)
  ax = figures.sensitivity_vs_params(table).axes[0]
  assert (ax.get_xscale(), ax.get_xlabel(), ax.get_ylabel()) == (
      "log", "non-embedding parameters", "LR sensitivity")
  assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["qkln-off", "qkln-on"]
  ax = figures.metric_over_training(runs.head(3), "attn_logit_max/block_0").axes[0]
  assert ax.get_yscale() == "log"
  ax = figures.metric_over_training(runs.head(3), "output_logit/mean").axes[0]
  assert ax.get_yscale() == "linear"  # negative values
  fig = figures.rms_vs(runs[runs["status"] == "done"], "grad_rms/block_0/mlp/wi/kernel",
                       x="lr", eps=1e-8)
  ax = fig.axes[0]
  assert (ax.get_xscale(), ax.get_yscale(), ax.get_xlabel()) == ("log", "log", "peak learning rate")
  assert any(list(line.get_ydata()) == [1e-8, 1e-8] for line in ax.get_lines())
  ax = figures.rms_vs(runs, "grad_rms/block_0/mlp/wi/kernel", x="num_params").axes[0]
  assert ax.get_xlabel() == "non-embedding parameters"
  for suffix in ("png", "svg"):
    assert (tmp_path / f"loss.{suffix}").stat().st_size > 1000
  assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_headline_lr_is_the_highest_where_every_seed_of_the_stable_arm_trained():
  runs = pd.DataFrame({
      "arm": ["qkln-on"] * 4 + ["qkln-off"] * 2, "lr": [0.3, 0.3, 1.0, 1.0, 0.3, 1.0],
      "seed": [0, 1, 0, 1, 0, 0],
      "status": ["done", "done", "done", "diverged", "diverged", "diverged"]})
  assert figures._headline_lr(runs, "qkln-on") == 0.3
  assert figures._headline_lr(runs[runs["seed"] == 0], "qkln-on") == 1.0


def test_demo_ratios_per_seed_and_over_the_seeds_both_arms_have():
  from launch import demo
  table = pd.DataFrame({
      "arm": ["qkln-on", "qkln-off"] * 3 + ["qkln-on"], "size": ["d64-L2"] * 4 + ["d128-L2"] * 3,
      "num_params": [1e5] * 4 + [4e5] * 3, "seed": [0, 0, 1, 1, 0, 0, 1],
      "sensitivity": [0.2, 0.4, 0.3, 0.5, 0.1, NAN, 0.2]})
  assert demo.ratio_rows(table) == [
      "  d64-L2     seed 0: 0.200 / 0.400 = 0.50; seed 1: 0.300 / 0.500 = 0.60; "
      "mean of 2 seeds: 0.250 / 0.450 = 0.56",
      "  d128-L2    (no seed has both arms)"]


def test_demo_judges_the_headline_beyond_the_seed_spread_beside_the_reference(tmp_path):
  """One seed: the gap is judged against the reference's spread (its floor with one seed) and the
  reference's own verdict at the same size is printed beside it."""
  from launch import demo
  sweep = _demo_sweep(tmp_path / "sweep")
  runs = results.load_runs(sweep)
  text = demo.verdict_lines(runs[runs["size"] == "d64-L2"], str(sweep))
  lines = text.splitlines()
  assert "claim 1" in lines[0] and "0.010" in lines[0]
  assert lines[1].split()[:3] == ["d64-L2", "this", "run:"] and "holds beyond them" in lines[1]
  assert lines[2].strip().startswith("reference:") and lines[2].endswith("(same verdict)")
  assert len(lines) == 3  # d128-L2 is not in this run, so it is not compared
  no_reference = demo.verdict_lines(runs, "")
  assert "reference:" not in no_reference and "d128-L2" in no_reference


def test_demo_compares_with_the_reference_and_notes_another_corpus(tmp_path):
  from launch import demo, reference
  sweep = _demo_sweep(tmp_path / "sweep")
  runs = results.load_runs(sweep)
  lines = demo.reference_lines(runs, str(sweep))
  assert f"equal the reference's in {len(runs.dropna(subset=['final_eval_loss']))} of" in lines
  assert "embedded corpus" not in lines  # no corpus recorded
  assert "rounds differently" in lines  # no step recorded: made before the label existed
  (sweep / reference.CORPUS).write_text(json.dumps(
      {"corpus": "stdlib-docstrings-v1-py3.99.0", "documents": 1, "sha256": "0" * 64}))
  assert "trained on the embedded corpus" in demo.reference_lines(runs, str(sweep))


def test_make_experiment_figures_writes_the_standard_set(tmp_path):
  sweep = _demo_sweep(tmp_path / "sweep")
  written = figures.make_experiment_figures(sweep, tmp_path / "out")
  names = sorted(pathlib.Path(p).name for p in written)
  assert names == sorted(f"{stem}.{ext}" for stem in
                         ("loss_vs_lr", "sensitivity_vs_params", "attn_logit_max_block0")
                         for ext in ("png", "svg"))
  assert all(pathlib.Path(p).stat().st_size > 1000 for p in written)


def test_report_of_a_folder_without_runs_is_an_error_of_one_line(tmp_path, capsys):
  assert report.main([str(tmp_path / "nothing")]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "no runs in" in err and "nothing" in err


def test_report_main_prints_table_and_problems(tmp_path, capsys):
  sweep = _demo_sweep(tmp_path / "sweep")
  (sweep / run_name("d64-L2", 1e-2, "qkln-on") / "summary.json").write_text("{broken")
  assert report.main([str(sweep), "--out", str(tmp_path / "out")]) == 0
  text = capsys.readouterr().out
  assert "LR sensitivity" in text and "qkln-off" in text and "d128-L2" in text
  assert "d64-L2_lr1e-02_qkln-on" in text and "problems (" in text
  csv = (tmp_path / "out" / "lr_sensitivity.csv").read_text().splitlines()
  assert csv[0].startswith("arm,size,seed,num_params") and len(csv) == 5
  assert (tmp_path / "out" / "loss_vs_lr.png").exists()


@pytest.mark.slow
def test_report_cli_runs_without_tensorflow_or_jax(tmp_path):
  """analysis reads result folders with the result format alone: no JAX, no TensorFlow."""
  sweep = _demo_sweep(tmp_path / "sweep")
  code = (
      "import sys, runpy\n"
      "sys.modules['tensorflow'] = None\n"  # importing it would raise
      f"sys.argv = ['analysis.report', {str(sweep)!r}, '--out', {str(tmp_path / 'o')!r}]\n"
      "try:\n  runpy.run_module('analysis.report', run_name='__main__')\n"
      "except SystemExit as e:\n  assert e.code == 0, e.code\n"
      "loaded = {m for m in sys.modules if m.startswith(('stability', 'jax', 'flax'))}\n"
      "assert loaded == {'stability', 'stability.result_format', 'stability.sizes',"
      " 'stability.flops'}, loaded\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr
  assert "sensitivity" in out.stdout
  table_rows = [l for l in out.stdout.splitlines() if l.strip().startswith("qkln-on")]
  assert len(table_rows) == 2
  assert json.loads((sweep / "sweep.json").read_text())["experiment"] == "fig1_qk_layernorm"
  assert (tmp_path / "o" / "sensitivity_vs_params.svg").exists()
