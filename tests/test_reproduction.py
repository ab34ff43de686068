"""The reproduction: committed reference runs, the page drawn from them, and launch.reproduce's
bookkeeping (copying shared runs, compact export, --only) without training."""

import json
import os
import shutil
import warnings

import pytest

from analysis import claims, evidence, reproduction, results
from configs import fig1_qk_layernorm, fig11_grad_rms, grid
from launch import reference, reproduce
from stability import result_format as fmt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = "reference/cpu"
IN_PROCESS = ("--workers=1",)  # the tests below replace the training in this process
DOC = "docs/reproduction.md"


@pytest.fixture
def in_repo(monkeypatch):
  monkeypatch.chdir(REPO)


@pytest.mark.slow
def test_committed_page_is_drawn_from_the_committed_reference_runs(in_repo):
  with open(DOC) as f:
    committed = f.read()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", results.ProblemWarning)
    drawn = reproduction.render(REFERENCE, DOC)
  assert drawn == committed, ("docs/reproduction.md is stale: run "
                              "`python -m analysis.reproduction reference/cpu`")


def test_page_has_a_verdict_for_every_claim_and_part(in_repo):
  with open(DOC) as f:
    table = [line for line in f if line.startswith("| ") and line.count(" | ") == 3]
  rows = [line for line in table if line[2:].split(" |")[0].isdigit()]
  assert len(rows) == len(claims.CLAIMS) == 14
  assert all(any(f"**{v}" in row.rsplit(" | ", 1)[1] for v in evidence.VERDICTS) for row in rows)
  kinds = (evidence.CONTRARY, evidence.BEYOND_SCALE)
  for row in table:  # every "not reproduced", claim or part, says which kind
    verdict = row.rsplit(" | ", 1)[1]
    if evidence.NOT_REPRODUCED in verdict:
      assert any(f"({k})" in verdict for k in kinds), row


def test_reference_runs_are_compact_and_readable(in_repo):
  total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(REFERENCE)
              for f in files)
  assert total <= 25e6
  runs = results.load_runs(os.path.join(REFERENCE, "fig1_qk_layernorm"))
  assert set(runs["status"]) <= set(results.FINISHED)
  assert sorted(runs["seed"].unique()) in ([0, 1], [0, 1, 2])  # 3 from the faster step on
  metrics = results.load_metrics(runs["run_dir"].iloc[0])
  assert {"step", "train_loss", "attn_logit_max/block_0"} <= set(metrics.columns)


def test_committed_reference_runs_record_one_corpus(in_repo):
  records = [fmt.read_json(os.path.join(REFERENCE, e, reference.CORPUS))
             for e in sorted(os.listdir(REFERENCE))]
  assert len(records) == len(reproduce.EXPERIMENTS)
  assert len({json.dumps(r, sort_keys=True) for r in records}) == 1, records
  assert records[0]["corpus"].endswith("py3.11.7")  # what the README says they trained on


def test_corpus_record_and_the_note_on_another_corpus(tmp_path):
  from stability.data import common as data_common
  from stability.data import embedded_corpus
  path = embedded_corpus.ensure_corpus(data_common.cache_dir(""))
  reference.write_corpus(str(tmp_path))
  record = json.loads((tmp_path / reference.CORPUS).read_text())
  assert record["corpus"] == embedded_corpus.corpus_name()
  assert record["documents"] == len(embedded_corpus.load_documents(path)) > 1000
  assert reference.corpus_note(str(tmp_path)) is None  # the same text
  assert reference.corpus_note(str(tmp_path / "unrecorded")) is None
  record.update(corpus="stdlib-docstrings-v1-py3.99.0", sha256="0" * 64)
  (tmp_path / reference.CORPUS).write_text(json.dumps(record))
  note = reference.corpus_note(str(tmp_path))
  assert "py3.99.0" in note and embedded_corpus.corpus_name() in note and "verdicts" in note


def test_compact_rows_keep_the_last_row_and_only_read_columns():
  rows = [{"step": i, "train_loss": 1 / (i + 1), "grad_rms/embed/embedding": 1.0,
           "attn_logit_max/block_0": 123.456789,
           "attn_logit_max/block_3": 7.0} for i in range(200)]
  out = reference.compact_rows(rows, max_rows=64)
  assert len(out) <= 65 and out[-1]["step"] == 199 and out[0]["step"] == 0
  assert set(out[0]) == {"step", "train_loss", "attn_logit_max/block_0"}
  assert out[0]["attn_logit_max/block_0"] == 123.5


def _fake_run(run_dir, config, status="done", loss=2.0):
  os.makedirs(run_dir, exist_ok=True)
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    json.dump(config, f)
  with open(os.path.join(run_dir, "summary.json"), "w") as f:
    json.dump({"status": status, "init_eval_loss": 5.0, "final_eval_loss": loss,
               "wall_s": 30.0, "num_params": 1e5}, f)
  with open(os.path.join(run_dir, "eval.jsonl"), "w") as f:
    f.write('{"step": 0, "eval_loss": 5.0}\n{"step": 300, "eval_loss": %r}\n' % loss)
  with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
    f.write('{"step": 10, "train_loss": 4.0, "param_rms/embed/embedding": 1.0}\n')
  os.makedirs(os.path.join(run_dir, "checkpoints", "100"), exist_ok=True)


def test_points_equal_to_an_earlier_finished_run_are_copied_not_trained(tmp_path):
  fig1 = fig1_qk_layernorm.get_grid("scale=cpu")
  point = fig1.point("d128-L4_lr3e-01_qkln-on")
  config = json.loads(json.dumps(grid.config_for(point, "cpu").to_dict()))
  _fake_run(tmp_path / "fig1_qk_layernorm" / point.name, config)
  eps = fig11_grad_rms.get_grid("scale=cpu")
  out_dir = str(tmp_path / "fig11_grad_rms")
  copied = reproduce.reuse_shared_runs(eps, out_dir, reproduce.finished_runs(str(tmp_path)))
  # The same config is both the ladder point and the ε = 1e-8 arm of fig11.
  assert copied == 2
  assert sorted(os.listdir(out_dir)) == ["d128-L4_lr3e-01_eps-1e-08", "d128-L4_lr3e-01_qkln-on"]
  assert not os.path.exists(os.path.join(out_dir, point.name, "checkpoints"))
  # A rerun copies nothing more.
  assert reproduce.reuse_shared_runs(eps, out_dir, reproduce.finished_runs(str(tmp_path))) == 0


def test_running_runs_are_neither_copied_nor_exported(tmp_path):
  fig1 = fig1_qk_layernorm.get_grid("scale=cpu")
  point = fig1.points[0]
  config = json.loads(json.dumps(grid.config_for(point, "cpu").to_dict()))
  _fake_run(tmp_path / "other" / point.name, config, status="running")
  assert reproduce.finished_runs(str(tmp_path)) == {}
  (tmp_path / "ref").mkdir()  # an earlier export, with the corpus its runs trained on
  (tmp_path / "ref" / reference.CORPUS).write_text('{"corpus": "kept"}')
  assert reference.export(str(tmp_path / "other"), str(tmp_path / "ref")) == 0
  assert json.loads((tmp_path / "ref" / reference.CORPUS).read_text()) == {"corpus": "kept"}
  with open(tmp_path / "ref" / "timing.json") as f:
    assert json.load(f) == {"runs": 0, "train_minutes_alone": 0.0}


def _timed_and_untimed(costs: dict, committed: dict) -> tuple[set, set]:
  """The runs with a committed reference time, and the others (points the committed reference
  does not hold yet: a new seed or arm, or a run now trained in microbatches)."""
  timed = {k for k in costs if k in committed}
  return timed, set(costs) - timed


def test_eta_weights_each_distinct_run_by_its_reference_seconds(in_repo, tmp_path):
  grids = reproduce.all_grids()
  progress = reproduce.Progress(grids, str(tmp_path), REFERENCE)
  committed = reference.wall_seconds(REFERENCE)
  timed, untimed = _timed_and_untimed(progress.costs, committed)
  assert timed and all(progress.costs[k] == committed[k] for k in timed)
  assert all(progress.costs[k] > 0 for k in untimed)  # priced at the reference's s per FLOP
  # Before a run has trained, the ETA is the reference runs' own pace (it said "unknown").
  assert progress.line().endswith(
      f"ETA {progress.total / 60:.0f} min at the reference runs' pace")
  two_runners = reproduce.Progress(grids, str(tmp_path), REFERENCE, runners=2)
  assert two_runners.line().endswith(
      f"ETA {progress.total / 2 / 60:.0f} min at the reference runs' pace")
  # A finished run leaves the estimate once, though two experiments share its config.
  fig1 = grids[0]
  point = fig1.point("d128-L2_lr3e-01_qkln-on")
  config = reproduce.point_config(fig1, point)
  assert sum(reproduce.point_config(g, p) == config for g in grids for p in g.points) >= 2
  _fake_run(tmp_path / "fig1_qk_layernorm" / point.name, config)
  done_s = progress.costs[reference.config_key(config)]
  assert done_s > 0 and progress.left() == pytest.approx(progress.total - done_s)


def test_eta_into_a_new_reference_folder_weights_runs_by_the_committed_ones(in_repo, tmp_path):
  grids = reproduce.select(reproduce.all_grids(), "fig1")
  progress = reproduce.Progress(grids, str(tmp_path / "out"), str(tmp_path / "new_reference"))
  committed = reference.wall_seconds(REFERENCE)
  timed, _ = _timed_and_untimed(progress.costs, committed)
  assert timed and all(progress.costs[k] == committed[k] for k in timed)


def test_eta_prices_runs_without_a_reference_at_the_reference_seconds_per_flop():
  flops = {"small": 1e9, "large": 4e9, "untimed": 2e9, "no_wall_s": 1e9}
  costs = reproduce.run_costs(flops, {"small": 10.0, "large": 30.0, "no_wall_s": 0.0})
  assert costs == {"small": 10.0, "large": 30.0, "untimed": pytest.approx(2e9 * 40 / 5e9),
                   "no_wall_s": pytest.approx(1e9 * 40 / 5e9)}
  assert reproduce.run_costs(flops, {}) == flops


def test_wall_seconds_skip_torn_runs_and_killed_exports(tmp_path):
  _fake_run(tmp_path / "a" / "run", {"lr": 1})
  _fake_run(tmp_path / "a.writing" / "run", {"lr": 2})
  _fake_run(tmp_path / "b" / "torn", {"lr": 3})
  (tmp_path / "b" / "torn" / "summary.json").write_text('{"status": "do')
  assert reference.wall_seconds(str(tmp_path)) == {reference.config_key({"lr": 1}): 30.0}
  assert reference.wall_seconds(str(tmp_path / "missing")) == {}


def test_only_selects_by_name_short_name_or_prefix_and_refuses_unknown_names(capsys):
  grids = reproduce.all_grids()
  assert len(grids) == len(reproduce.EXPERIMENTS)
  assert {g.experiment for g in grids} >= {s for c in claims.CLAIMS for s in c.sweeps}
  # A short name (the figure) selects that experiment alone, not the others it prefixes.
  assert [g.experiment for g in reproduce.select(grids, "fig1,e10")] == [
      "fig1_qk_layernorm", "e10_weight_decay"]
  assert [g.experiment for g in reproduce.select(grids, "fig1_qk_layernorm")] == [
      "fig1_qk_layernorm"]
  # Any other prefix selects every experiment it begins.
  assert [g.experiment for g in reproduce.select(grids, "e1,fig1_")] == [
      "fig1_qk_layernorm", "e11_pointwise_attention", "e10_weight_decay"]
  assert len(reproduce.select(grids, "fig")) == sum(e.startswith("configs/fig")
                                                     for e in reproduce.EXPERIMENTS)
  with pytest.raises(SystemExit) as stopped:
    reproduce.select(grids, "fig99")
  assert stopped.value.code == 2 and "no experiment fig99" in capsys.readouterr().err


@pytest.mark.slow
def test_redraw_without_training_writes_the_page_and_figures(tmp_path, in_repo):
  ref = tmp_path / "ref"
  shutil.copytree(os.path.join(REFERENCE, "fig1_qk_layernorm"), ref / "fig1_qk_layernorm")
  doc = tmp_path / "docs" / "reproduction.md"
  reproduction.main([str(ref), f"--doc={doc}"])
  text = doc.read_text()
  assert "| 1 | Fig 1 |" in text and "**not run**" in text
  assert (tmp_path / "docs" / "reproduction" / "fig1_qk_layernorm" / "loss_vs_lr.png").exists()
  assert "](reproduction/fig1_qk_layernorm/loss_vs_lr.png)" in text


def test_a_preempted_experiment_stops_the_reproduction(tmp_path, monkeypatch):
  trained = []

  def fake_run_grid(grid, out_dir, only="", batch=False, should_stop=lambda: False):
    trained.append(grid.experiment)
    return {"preempted": 1}

  monkeypatch.setattr(reproduce.sweep, "run_grid", fake_run_grid)
  code = reproduce.main([*IN_PROCESS, f"--out={tmp_path / 'out'}",
                         f"--reference={tmp_path / 'ref'}",
                         "--doc=", "--only=fig10,fig11"])
  assert code == reproduce.EXIT_PREEMPTED and trained == ["fig10_forced_logits"]
  # What had finished is still exported before it stops.
  assert os.path.exists(tmp_path / "ref" / "fig10_forced_logits" / "timing.json")
  assert not os.path.exists(tmp_path / "ref" / "fig11_grad_rms")


@pytest.mark.slow
def test_batch_flag_reaches_the_sweep_runner_and_auto_never_batches_on_cpu(tmp_path, monkeypatch):
  batched = []

  def fake_run_grid(grid, out_dir, only="", batch=False, should_stop=lambda: False):
    batched.append(batch)
    _fake_run(os.path.join(out_dir, grid.points[len(batched)].name), {"lr": len(batched)})
    return {"done": 1}

  monkeypatch.setattr(reproduce.sweep, "run_grid", fake_run_grid)
  for flag in ("auto", "on", "off"):
    reproduce.main([*IN_PROCESS, f"--out={tmp_path / 'out'}",
                    f"--reference={tmp_path / 'ref'}", "--doc=",
                    "--only=fig10", f"--batch={flag}"])
  assert batched == [False, True, False]
  # What it trained is recorded with the corpus it trained on.
  assert reference.corpus_note(str(tmp_path / "ref" / "fig10_forced_logits")) is None
  assert (tmp_path / "ref" / "fig10_forced_logits" / reference.CORPUS).exists()


@pytest.mark.slow
def test_runs_made_on_another_corpus_are_noted_before_training(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(reproduce.sweep, "run_grid", lambda *a, **k: {"done": 1})
  other = tmp_path / "ref" / "fig10_forced_logits"
  other.mkdir(parents=True)
  (other / reference.CORPUS).write_text(json.dumps(
      {"corpus": "stdlib-docstrings-v1-py3.99.0", "documents": 1, "sha256": "0" * 64}))
  reproduce.main([*IN_PROCESS, f"--out={tmp_path / 'out'}",
                  f"--reference={tmp_path / 'ref'}", "--doc=",
                  "--only=fig10"])
  out = capsys.readouterr().out
  assert "[reproduce] note:" in out and "py3.99.0" in out
  assert out.index("note:") < out.index("fig10_forced_logits (Fig 10)")
  # Nothing was trained in that call: the record of the runs there stays theirs.
  assert "py3.99.0" in (other / reference.CORPUS).read_text()


def test_sigterm_between_points_stops_before_the_next_point(tmp_path, monkeypatch):
  seen = []

  def fake_run_grid(grid, out_dir, only="", batch=False, should_stop=lambda: False):
    reproduce.STOP.set()  # as the SIGTERM handler does, outside a training loop
    seen.append((grid.experiment, should_stop()))
    return {"done": 1}

  monkeypatch.setattr(reproduce.sweep, "run_grid", fake_run_grid)
  try:
    code = reproduce.main([*IN_PROCESS, f"--out={tmp_path / 'out'}",
                          f"--reference={tmp_path / 'ref'}",
                          "--doc=", "--only=fig10,fig11"])
  finally:
    reproduce.STOP.clear()
  assert code == reproduce.EXIT_PREEMPTED and seen == [("fig10_forced_logits", True)]


def test_totals_count_a_run_copied_into_two_experiments_once(tmp_path):
  for experiment, name, config, wall_s in (("a", "x", {"lr": 1}, 60.0), ("b", "x", {"lr": 1}, 60.0),
                                           ("b", "y", {"lr": 2}, 120.0)):
    run_dir = tmp_path / experiment / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "summary.json").write_text(json.dumps({"status": "done", "wall_s": wall_s}))
  (tmp_path / "b" / "timing.json").write_text("{}")  # not a run folder
  assert reference.totals(str(tmp_path)) == (3, 2, 3.0)


def test_the_note_on_runs_made_by_a_step_that_rounds_differently(tmp_path):
  """Runs whose provenance names another `result_format.NUMERICS` (or none: made before the
  label existed) are flagged, by the demo and the page alike; runs of this step are not."""
  run = tmp_path / "fig1" / "d64-L2_lr1e-02"
  run.mkdir(parents=True)
  summary = {"status": "done", "final_eval_loss": 2.0}
  (run / fmt.SUMMARY).write_text(json.dumps(summary))
  note = reference.numerics_note(str(tmp_path / "fig1"))
  assert fmt.NUMERICS_BEFORE in note and fmt.NUMERICS in note and "verdicts" in note
  assert "These runs were" in "".join(reproduction._numerics_note(str(tmp_path)))
  mixed = tmp_path / "fig1" / "d64-L2_lr3e-02"  # one run of this step beside the old one
  mixed.mkdir()
  (mixed / fmt.SUMMARY).write_text(json.dumps({**summary, "provenance": [{"numerics": fmt.NUMERICS}]}))
  note = "".join(reproduction._numerics_note(str(tmp_path)))
  assert note.startswith("**Rounding.** Some of these runs were") and f"theirs: {fmt.NUMERICS_BEFORE};" in note
  (mixed / fmt.SUMMARY).unlink()
  mixed.rmdir()
  summary["provenance"] = [{"numerics": fmt.NUMERICS}]
  (run / fmt.SUMMARY).write_text(json.dumps(summary))
  assert reference.numerics_note(str(tmp_path / "fig1")) is None
  assert reproduction._numerics_note(str(tmp_path)) == []
  assert reference.numerics_note(str(tmp_path / "missing")) is None


@pytest.mark.slow
def test_by_default_the_committed_reference_is_left_alone_and_compared_with(tmp_path, capsys):
  """`make reproduce` writes its copies and page under results/ and sets each verdict beside
  the committed reference runs'; only --update_reference points it at the committed files."""
  args = reproduce.parse_args([])
  assert (args.reference, args.doc) == ("results/reference/cpu", "results/reproduction.md")
  args = reproduce.parse_args(["--update_reference"])
  assert (args.reference, args.doc) == (REFERENCE, "docs/reproduction.md")
  experiment = "fig10_forced_logits"
  shutil.copytree(os.path.join(REFERENCE, experiment), tmp_path / "out" / experiment)
  before = sorted(os.listdir(os.path.join(REFERENCE, experiment)))
  assert reproduce.main([*IN_PROCESS, f"--out={tmp_path / 'out'}",
                         f"--reference={tmp_path / 'ref'}",
                         f"--doc={tmp_path / 'page.md'}", "--only=fig10", "--train=false"]) == 0
  out = capsys.readouterr().out
  assert "verdicts against the committed reference runs (reference/cpu)" in out
  (line,) = [l for l in out.splitlines() if "Fig 10:" in l]
  assert line.strip() == "10 Fig 10: not reproduced -> not reproduced (same)"
  assert (tmp_path / "page.md").exists() and (tmp_path / "ref" / experiment).is_dir()
  assert sorted(os.listdir(os.path.join(REFERENCE, experiment))) == before


def test_an_export_with_nothing_finished_leaves_the_runs_already_there(tmp_path):
  run = tmp_path / "ref" / "d64-L2_lr1e-02"
  run.mkdir(parents=True)
  (run / fmt.CONFIG).write_text("{}")
  (tmp_path / "empty").mkdir()
  assert reference.export(str(tmp_path / "empty"), str(tmp_path / "ref")) == 0
  assert (run / fmt.CONFIG).exists() and not (tmp_path / "ref.writing").exists()


def _point_config(module, arg: str, name: str) -> dict:
  g = module.get_grid(arg)
  return json.loads(json.dumps(grid.config_for(g.point(name), g.scale).to_dict()))


def test_same_training_merges_spellings_of_one_run_and_nothing_else():
  """One head: full-width qk-layernorm is per-head; μParam-simple at its base width is standard;
  an eval batch equal to the batch is the default. Two heads, another width, another eval batch:
  other runs."""
  from configs import ablations, fig8_mup
  from stability import config_schema
  key = reference.config_key
  per_head = _point_config(ablations, "scale=cpu,ablation=e8", "d64-L2_lr1e-02_qkln-per_head")
  full = _point_config(ablations, "scale=cpu,ablation=e8", "d64-L2_lr1e-02_qkln-full_width")
  assert full != per_head and key(full) == key(per_head)
  full_2heads = _point_config(ablations, "scale=cpu,ablation=e8", "d128-L2_lr1e-02_qkln-full_width")
  per_head_2heads = _point_config(ablations, "scale=cpu,ablation=e8",
                                  "d128-L2_lr1e-02_qkln-per_head")
  assert key(full_2heads) != key(per_head_2heads)

  base = fig8_mup.MUP_BASE_WIDTH["cpu"]
  standard = json.loads(json.dumps(config_schema.default_config().to_dict()))
  standard["model"].update(d_model=base)
  mup = json.loads(json.dumps(standard))
  mup["model"].update(parametrization="mup_simple", mup_base_width=base)
  assert key(mup) == key(standard)
  mup["model"]["d_model"] = 2 * base
  standard["model"]["d_model"] = 2 * base
  assert key(mup) != key(standard)

  explicit = json.loads(json.dumps(standard))
  explicit["data"]["eval_batch_size"] = explicit["data"]["batch_size"]
  assert key(explicit) == key(standard)
  explicit["data"]["eval_batch_size"] = 2 * explicit["data"]["batch_size"]
  assert key(explicit) != key(standard)


def test_a_copy_of_the_same_training_keeps_the_points_own_config(tmp_path):
  """E.8's one-head full-width point is copied from its per-head run, with its own config.json."""
  from configs import ablations
  arg = "scale=cpu,ablation=e8"
  per_head = _point_config(ablations, arg, "d64-L2_lr1e-02_qkln-per_head")
  _fake_run(tmp_path / "earlier" / "d64-L2_lr1e-02_qkln-per_head", per_head)
  e8 = ablations.get_grid(arg)
  out_dir = str(tmp_path / "e8")
  index = reproduce.finished_runs(str(tmp_path))
  assert reproduce.reuse_shared_runs(e8, out_dir, index) == 2  # and the per-head point itself
  with open(os.path.join(out_dir, "d64-L2_lr1e-02_qkln-full_width", "config.json")) as f:
    assert json.load(f) == _point_config(ablations, arg, "d64-L2_lr1e-02_qkln-full_width")
