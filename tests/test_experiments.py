"""The experiment grids (configs/fig*.py, configs/ablations.py) against the published ones.

At `scale=paper` every grid must list the sizes, LRs and arms of the paper
(docs/paper_notes.md#experiments); at every scale its point names are unique and each point's
config validates; `launch.sweep --dry_run` prints it; and one point of each experiment at
`scale=cpu` trains for three steps.
"""

import collections
import importlib
import json
import math
import pathlib
import subprocess
import sys

import pandas as pd
import pytest

from analysis import sensitivity as sensitivity_lib
from configs import fig1_qk_layernorm, fig8_mup, grid
from stability import sizes
from launch import sweep
from stability.data import embedded_corpus
from stability import result_format as results
from stability import train
from stability import validation

REPO = pathlib.Path(__file__).resolve().parents[1]
PAPER_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
LADDER = ("d512-L3", "d512-L6", "d768-L6", "d768-L12", "d1024-L12", "d1024-L24", "d1536-L24",
          "d2048-L24")  # Fig 1's joint ladder, up to 1.2B (docs/paper_notes.md#model-sizes)
ABLATIONS = ("e7", "e8", "e9", "e10", "e11", "e14")
# (config module, extra arg): every experiment grid, each configs/fig*.py and each ablation.
FIGURES = sorted(p.stem for p in (pathlib.Path(__file__).parents[1] / "configs").glob("fig*.py"))
SPECS = [(name, "") for name in FIGURES] + [("ablations", f"ablation={a}") for a in ABLATIONS]
# Fig 1's arms (qk-layernorm on/off) train as points of fig9, fig11 and figC1, and in the demo.
NO_CPU_RUN = {("fig1_qk_layernorm", "")}
SPEC_IDS = [extra.partition("=")[2] or name for name, extra in SPECS]


def get_grid(name: str, extra: str, scale: str) -> grid.Grid:
  module = importlib.import_module(f"configs.{name}")
  return module.get_grid(",".join(filter(None, [f"scale={scale}", extra])))


def paper(name: str, extra: str = "") -> grid.Grid:
  return get_grid(name, extra, "paper")


def layout(g: grid.Grid) -> dict[str, dict[str, tuple[float, ...]]]:
  """{arm: {size: sorted LRs}}, in point order."""
  out = collections.defaultdict(lambda: collections.defaultdict(list))
  for p in g.points:
    out[p.arm][p.size].append(p.lr)
  return {arm: {size: tuple(sorted(lrs)) for size, lrs in by_size.items()}
          for arm, by_size in out.items()}


def configs_of(g: grid.Grid, arm: str) -> list:
  return [grid.config_for(p, g.scale) for p in g.points if p.arm == arm]


def one_value(g: grid.Grid, arm: str, field: str):
  """The single value a config field takes over an arm's points."""
  group, name = field.split(".")
  values = {c[group][name] for c in configs_of(g, arm)}
  assert len(values) == 1, (arm, field, values)
  return values.pop()


def lrs_equal(a, b) -> bool:
  return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-9) for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------
# Every grid at every scale


@pytest.mark.parametrize("scale", grid.SCALES)
@pytest.mark.parametrize(("name", "extra"), SPECS, ids=SPEC_IDS)
def test_grid_is_well_formed(name, extra, scale):
  g = get_grid(name, extra, scale)
  assert g.scale == scale and g.points and g.figure
  names = [p.name for p in g.points]
  assert len(names) == len(set(names)), "duplicate point names"
  for p in g.points:
    c = grid.config_for(p, scale)
    validation.validate(c)
    assert (c.model.size, c.opt.peak_lr) == (p.size, p.lr)
    assert p.name == grid.run_name(p.size, p.lr, p.arm, c.train.seed)
    if scale == "cpu":  # trains in well under a minute on a laptop, bar Fig 4's long pair
      long = name == "fig3_output_logit_divergence" and p.arm.endswith("_T3000")
      assert c.data.source == "embedded" and c.train.steps <= (3000 if long else 600)
      # The ladder stays under 1M parameters; fig9's target is one size beyond it.
      assert sizes.non_embedding_params(p.size) <= 2e6, p.name
  if g.sensitivity is not None:
    lo, hi = grid.SCALE_RANGE[scale]
    assert g.sensitivity["rule"] == "single" and g.sensitivity["ranges"] == [[lo, hi]]
  json.dumps(g.to_json())  # sweep.json
  module = importlib.import_module(f"configs.{name}")
  last = g.points[-1]
  arg = ",".join(filter(None, [f"scale={scale}", extra, f"point={last.name}"]))
  assert module.get_config(arg).to_dict() == grid.config_for(last, scale).to_dict()


@pytest.mark.parametrize(("name", "extra"), SPECS, ids=SPEC_IDS)
def test_unknown_arg_is_refused(name, extra):
  with pytest.raises(ValueError, match="siz"):
    get_grid(name, ",".join(filter(None, [extra, "siz=d64-L2"])), "cpu")


def test_sizes_arg_narrows_the_grid():
  g = paper("fig3_output_logit_divergence", "")
  narrow = get_grid("fig3_output_logit_divergence", "sizes=d256-L3+d512-L6", "paper")
  assert {p.size for p in narrow.points} == {"d256-L3", "d512-L6"}
  assert len(narrow.points) == 4 * 2 * 7 < len(g.points)


def test_ablation_must_be_named():
  with pytest.raises(ValueError, match="ablation"):
    get_grid("ablations", "", "paper")
  with pytest.raises(ValueError, match="ablation"):
    get_grid("ablations", "ablation=e12", "paper")


# ---------------------------------------------------------------------------------------------
# The published grids (docs/paper_notes.md#experiments)


def test_fig3_zloss_by_weight_decay():
  g = paper("fig3_output_logit_divergence")
  arms = layout(g)
  assert set(arms) == {"zloss-on_wd-on", "zloss-off_wd-on", "zloss-on_wd-off", "zloss-off_wd-off"}
  for arm, by_size in arms.items():
    assert tuple(by_size) == ("d256-L3",) + LADDER
    assert all(lrs_equal(lrs, PAPER_LRS) for lrs in by_size.values())
    assert one_value(g, arm, "model.qk_layernorm") == "per_head"
    assert one_value(g, arm, "loss.z_loss") == (1e-4 if "zloss-on" in arm else 0.0)
    assert one_value(g, arm, "opt.weight_decay") == (1e-4 if "wd-on" in arm else 0.0)
    assert one_value(g, arm, "opt.weight_decay_mode") == "independent"
  # Fig 4: the 2.4M model at LR 0.1, no weight decay, z-loss on vs off.
  for z in ("on", "off"):
    assert g.point(f"d256-L3_lr1e-01_zloss-{z}_wd-off").size == "d256-L3"
  assert len(g.points) == 4 * 9 * 7


@pytest.mark.parametrize("scale", grid.SCALES)
def test_fig5_warmups(scale):
  g = get_grid("fig5_warmup", "", scale)
  steps = grid.SCALE_SETTINGS[scale]["train.steps"]
  default = grid.SCALE_SETTINGS[scale]["opt.warmup_steps"]
  warmups = {arm: one_value(g, arm, "opt.warmup_steps") for arm in layout(g)}
  assert all(one_value(g, arm, "train.steps") == steps for arm in warmups)
  assert sorted(warmups.values())[1] == default and len(warmups) == 3
  assert all(arm == f"warmup-{w}" for arm, w in warmups.items())
  if scale == "paper":
    assert sorted(warmups.values()) == [500, 5000, 25_000]
    assert all(tuple(by_size) == LADDER for by_size in layout(g).values())
    assert len(g.points) == 3 * 8 * 7


def test_fig6_coupled_weight_decay_has_lr_1e4_and_two_ranges():
  g = paper("fig6_weight_decay")
  arms = layout(g)
  assert set(arms) == {"wd-independent", "wd-coupled"}
  assert all(lrs_equal(lrs, PAPER_LRS) for lrs in arms["wd-independent"].values())
  assert all(lrs_equal(lrs, (1e-4,) + PAPER_LRS) for lrs in arms["wd-coupled"].values())
  assert tuple(arms["wd-coupled"]) == tuple(arms["wd-independent"]) == LADDER
  assert (one_value(g, "wd-coupled", "opt.weight_decay_mode"),
          one_value(g, "wd-coupled", "opt.weight_decay")) == ("coupled", 0.1)
  assert (one_value(g, "wd-independent", "opt.weight_decay_mode"),
          one_value(g, "wd-independent", "opt.weight_decay")) == ("independent", 1e-4)
  # The analysis reads the rules from sweep.json: min of two ranges for the coupled arm only.
  spec = json.loads(json.dumps(g.to_json()))["sensitivity"]
  coupled = sensitivity_lib.rule_for("wd-coupled", pd.DataFrame(), spec, None)
  assert coupled == sensitivity_lib.Rule("min_of_ranges", ((1e-4, 1e-1), (3e-4, 3e-1)))
  independent = sensitivity_lib.rule_for("wd-independent", pd.DataFrame(), spec, None)
  assert independent == sensitivity_lib.Rule("single", ((3e-4, 3e-1),))
  assert len(g.points) == 8 * 7 + 8 * 8


def test_fig6_cpu_coupled_arm_is_scored_over_the_range_and_half_a_decade_below():
  g = get_grid("fig6_weight_decay", "", "cpu")
  # The lower range starts at 1e-3, which the cpu grid has: no extra LR.
  assert all(lrs_equal(v, grid.CPU_LRS) for v in layout(g)["wd-coupled"].values())
  assert g.sensitivity["arms"]["wd-coupled"]["ranges"] == [[1e-3, 1e-1], [3e-3, 3e-1]]
  assert g.sensitivity["ranges"] == [[3e-3, 3e-1]]


@pytest.mark.parametrize("scale, matched", [("cpu", 1e-4 * 1e5 / 300), ("gpu", 1e-4 * 1e5 / 1e4)])
def test_fig6_trains_the_paper_total_decay_where_steps_are_fewer(scale, matched):
  """λ·T = 10 as over the paper's 1e5 steps; the paper's λ arm stays, on the same points."""
  g = get_grid("fig6_weight_decay", "", scale)
  arms = layout(g)
  assert set(arms) == {"wd-independent", "wd-coupled", "wd-independent-matched"}
  assert arms["wd-independent-matched"] == arms["wd-independent"]
  assert one_value(g, "wd-independent-matched", "opt.weight_decay") == pytest.approx(matched)
  assert one_value(g, "wd-independent-matched", "opt.weight_decay_mode") == "independent"
  assert one_value(g, "wd-independent", "opt.weight_decay") == 1e-4


def test_fig7_width_and_depth_sweeps():
  g = paper("fig7_width_depth")
  arms = layout(g)
  assert set(arms) == {"width_qkln-on", "width_qkln-off", "depth_qkln-on", "depth_qkln-off"}
  for arm, by_size in arms.items():
    dimension, _, qkln = arm.partition("_")
    assert tuple(by_size) == (sizes.WIDTH_SWEEP if dimension == "width" else sizes.DEPTH_SWEEP)
    assert all(lrs_equal(lrs, PAPER_LRS) for lrs in by_size.values())
    assert one_value(g, arm, "model.qk_layernorm") == ("per_head" if qkln == "qkln-on" else "off")
    configs = configs_of(g, arm)
    fixed = {c.model.num_layers if dimension == "width" else c.model.d_model for c in configs}
    assert fixed == ({6} if dimension == "width" else {512})
    assert {c.model.d_model // c.model.num_heads for c in configs} == {64}
  assert len(g.points) == 2 * (6 + 5) * 7


def test_fig8_mup_arms_and_lr_1_for_full_mup_with_qkln():
  g = paper("fig8_mup")
  arms = layout(g)
  params = ("standard", "mup-simple", "mup-intermediate", "mup-full")
  assert set(arms) == {f"{p}_qkln-{q}" for p in params for q in ("on", "off")}
  for arm, by_size in arms.items():
    param, _, qkln = arm.partition("_")
    assert tuple(by_size) == LADDER
    expected = PAPER_LRS + (1.0,) if arm == "mup-full_qkln-on" else PAPER_LRS
    assert all(lrs_equal(lrs, expected) for lrs in by_size.values()), arm
    assert one_value(g, arm, "model.parametrization") == param.replace("-", "_")
    assert one_value(g, arm, "model.mup_base_width") == 256
    assert one_value(g, arm, "model.qk_layernorm") == ("per_head" if qkln == "qkln-on" else "off")
  assert len(g.points) == 8 * 8 * 7 + 8
  assert one_value(get_grid("fig8_mup", "", "cpu"), "mup-simple_qkln-on",
                   "model.mup_base_width") == 64


def test_cpu_width_and_depth_spans_for_figs_7_and_8():
  """At cpu scale Fig 7 spans at least 0.9 decades of parameters in each direction, and the arms
  Fig 8 compares across widths span 4× in width (the other arms keep the two smaller widths)."""
  fig7 = layout(get_grid("fig7_width_depth", "", "cpu"))
  params = sizes.non_embedding_params
  decades = {arm: math.log10(max(map(params, by_size)) / params("d64-L2"))
             for arm, by_size in fig7.items()}
  assert min(decades.values()) >= 0.9, decades
  fig8 = layout(get_grid("fig8_mup", "", "cpu"))
  for arm, by_size in fig8.items():
    widest = ("d256-L2",) if arm in fig8_mup.WIDTH_ARMS else ()
    assert tuple(by_size) == ("d64-L2", "d128-L2") + widest, arm
  assert tuple(layout(get_grid("fig8_mup", "sizes=d64-L2", "cpu"))["mup-simple_qkln-on"]) == (
      "d64-L2",)


def test_fig8_trains_more_seeds_when_asked_and_seed_0_by_default():
  default = get_grid("fig8_mup", "", "cpu")
  assert all(not p.name.endswith(("_seed1", "_seed2")) for p in default.points)
  more = get_grid("fig8_mup", "seeds=0+2", "cpu")
  seed2 = [p for p in more.points if p.name.endswith("_seed2")]
  assert len(more.points) == 2 * len(default.points) == 2 * len(seed2)
  assert all(p.overrides["train.seed"] == p.overrides["data.seed"] == 2 for p in seed2)


def test_fig9_ladder_without_qkln_plus_the_4p8b_target():
  g = paper("fig9_prediction")
  by_size = layout(g)["qkln-off"]
  assert set(layout(g)) == {"qkln-off"}
  assert tuple(by_size) == LADDER + ("d4096-L24",)
  assert all(lrs_equal(by_size[s], PAPER_LRS) for s in LADDER)
  assert by_size["d4096-L24"] == (1e-2,)
  assert one_value(g, "qkln-off", "model.qk_layernorm") == "off"
  for scale in ("gpu", "paper"):  # the metric is the max logit at step 2000: it must be logged
    c = grid.config_for(get_grid("fig9_prediction", "", scale).points[0], scale)
    assert c.train.steps > 2000 and 2000 % c.train.log_every == 0
  assert len(g.points) == 8 * 7 + 1
  narrowed = get_grid("fig9_prediction", "target=d2048-L24,target_lr=1e-2", "paper")
  assert len(narrowed.points) == 8 * 7  # the target is in the ladder already: not twice
  # cpu: four ladder sizes × 10 LRs (the grid and three between 1e-2 and 1e-1), and the target
  # at every one of them
  cpu = get_grid("fig9_prediction", "", "cpu")
  lrs = sorted(grid.CPU_LRS + (0.02, 0.04, 0.06))
  assert len(cpu.points) == 4 * 10 + 10
  assert cpu.to_json()["target"] == {"size": "d192-L4", "lrs": lrs}


def test_fig10_forced_kappas_and_bigram():
  g = paper("fig10_forced_logits")
  arms = layout(g)
  kappas = {}
  for arm in arms:
    if arm == "bigram":
      continue
    assert arms[arm] == {"d512-L3": (1e-2,)}
    assert one_value(g, arm, "model.attention") == "forced"
    assert one_value(g, arm, "model.qk_layernorm") == "off"
    kappas[arm] = one_value(g, arm, "model.forced_kappa")
  assert sorted(kappas.values()) == [1.0, 10.0, 100.0, 1e3, 3e3, 1e4, 3e4]
  assert arms["bigram"] == {"d512-L0": (1e-2,)}
  assert (one_value(g, "bigram", "model.num_layers"), one_value(g, "bigram", "model.d_model")) == (
      0, 512)
  assert g.sensitivity is None and len(g.points) == 8


def test_fig11_ladder_and_eps_sweep_at_4p8b():
  g = paper("fig11_grad_rms")
  arms = layout(g)
  assert tuple(arms["qkln-on"]) == LADDER
  assert all(lrs_equal(lrs, PAPER_LRS) for lrs in arms["qkln-on"].values())
  eps = {}
  for arm in set(arms) - {"qkln-on"}:
    assert arms[arm] == {"d4096-L24": (0.3,)}
    eps[arm] = one_value(g, arm, "opt.eps")
  assert sorted(eps.values()) == [1e-15, 1e-8, 1e-6]
  assert len(g.points) == 8 * 7 + 3


def test_figC1_ladder_by_lr():
  g = paper("figC1_output_norm")
  assert set(layout(g)) == {"qkln-on"}
  assert tuple(layout(g)["qkln-on"]) == LADDER
  assert all(lrs_equal(lrs, PAPER_LRS) for lrs in layout(g)["qkln-on"].values())


@pytest.mark.parametrize(("name", "arm"), [
    ("fig9_prediction", "qkln-off"), ("fig11_grad_rms", "qkln-on"),
    ("figC1_output_norm", "qkln-on")])
@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_points_shared_with_fig1_are_the_same_runs(name, arm, scale):
  """The docstrings say fig1's run folders can be copied in: names and configs must agree."""
  fig1 = {p.name: p for p in fig1_qk_layernorm.get_grid(f"scale={scale}").points}
  shared = [p for p in get_grid(name, "", scale).points if p.name in fig1]
  first_seed = [p for p in fig1.values() if p.arm == arm and "_seed" not in p.name]
  assert len(shared) == len(first_seed) > 0
  for p in shared:
    assert grid.config_for(p, scale).to_dict() == grid.config_for(fig1[p.name], scale).to_dict()


def test_ablation_grids():
  e7 = paper("ablations", "ablation=e7")
  assert e7.experiment == "e7_steps"
  steps = {arm: one_value(e7, arm, "train.steps") for arm in layout(e7)}
  assert sorted(steps.values()) == [50_000, 100_000, 200_000]
  assert all(one_value(e7, arm, "opt.warmup_steps") == 5000 for arm in steps)

  e8 = paper("ablations", "ablation=e8")
  assert sorted(one_value(e8, arm, "model.qk_layernorm") for arm in layout(e8)) == [
      "full_width", "per_head"]

  e9 = paper("ablations", "ablation=e9")
  pairs = sorted((one_value(e9, arm, "data.batch_size"), one_value(e9, arm, "train.steps"))
                 for arm in layout(e9))
  assert pairs == [(256, 100_000), (512, 50_000), (1024, 25_000)]
  assert all(one_value(e9, arm, "data.eval_batch_size") == 256 for arm in layout(e9))

  e10 = paper("ablations", "ablation=e10")
  assert sorted(one_value(e10, arm, "opt.weight_decay") for arm in layout(e10)) == [
      0.0, 1e-5, 1e-4, 1e-3]
  assert all(one_value(e10, arm, "opt.weight_decay_mode") == "independent" for arm in layout(e10))

  e11 = paper("ablations", "ablation=e11")
  assert sorted((one_value(e11, arm, "model.attention"), one_value(e11, arm, "model.qk_layernorm"))
                for arm in layout(e11)) == [("softmax", "off"), ("softmax", "per_head"),
                                            ("squared_relu", "off"), ("squared_relu", "per_head")]

  e14 = paper("ablations", "ablation=e14")
  assert sorted(one_value(e14, arm, "opt.lr_scale") for arm in layout(e14)) == [
      "none", "param_rms"]
  assert e14.sensitivity is None

  for g, n_arms in ((e7, 3), (e8, 2), (e9, 3), (e10, 4), (e11, 4), (e14, 2)):
    assert all(tuple(by_size) == LADDER for by_size in layout(g).values()), g.experiment
    assert all(lrs_equal(lrs, PAPER_LRS) for by_size in layout(g).values()
               for lrs in by_size.values()), g.experiment
    assert len(layout(g)) == n_arms and len(g.points) == n_arms * 8 * 7


def test_ablation_batch_size_keeps_tokens_at_cpu_scale():
  e9 = get_grid("ablations", "ablation=e9", "cpu")
  tokens = {one_value(e9, arm, "data.batch_size") * one_value(e9, arm, "train.steps")
            for arm in layout(e9)}
  assert tokens == {16 * 300}


# ---------------------------------------------------------------------------------------------
# --dry_run


@pytest.mark.parametrize(("name", "extra"), SPECS, ids=SPEC_IDS)
def test_dry_run_lists_every_point(name, extra):
  g = paper(name, extra)
  text = sweep.dry_run(g, "H100", 0.4)
  lines = text.splitlines()
  assert len(lines) == len(g.points) + 3 and lines[-1].startswith("total:")
  assert [line.split()[0] for line in lines[2:-1]] == [p.name for p in g.points]
  assert "nan" not in lines[-1]


@pytest.mark.parametrize("spec", ["fig6_weight_decay.py:scale=paper",
                                  "ablations.py:scale=paper,ablation=e9"])
def test_dry_run_command_line(spec):
  out = subprocess.run(
      [sys.executable, "-m", "launch.sweep", f"--experiment=configs/{spec}", "--dry_run"],
      cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert out.returncode == 0, out.stderr[-2000:]
  module, _, arg = spec.partition(":")
  g = importlib.import_module(f"configs.{module[:-3]}").get_grid(arg)
  printed = [line.split()[0] for line in out.stdout.splitlines()[2:-1]]
  assert printed == [p.name for p in g.points]
  assert out.stdout.splitlines()[-1].startswith("total:") and "H100-hours" in out.stdout


# ---------------------------------------------------------------------------------------------
# One point of each experiment trains at cpu scale

TINY = {
    "train.steps": 3, "opt.warmup_steps": 1, "train.log_every": 1, "train.eval_every": 3,
    "train.ckpt_every": 3, "data.eval_batches": 1, "data.batch_size": 4, "model.seq_len": 32,
}
# (config module, extra arg, arm or None for any): the smallest point of that arm at scale=cpu
# trains. XLA compiles dominate (~8 s of CPU a run), so to keep `-m "not slow"` near a minute
# the runs whose arm only changes a scalar hyperparameter (z-loss, warm-up, ε, steps, batch, λ)
# or takes a code path another run takes (qk-layernorm off, fig1's points) are `slow`.
SLOW = pytest.mark.slow
RUNS = [
    pytest.param("fig3_output_logit_divergence", "", "zloss-off_wd-off", id="fig3-zloss-off",
                 marks=SLOW),
    pytest.param("fig5_warmup", "", None, id="fig5", marks=SLOW),
    pytest.param("fig6_weight_decay", "", "wd-coupled", id="fig6-coupled"),
    pytest.param("fig7_width_depth", "", "depth_qkln-on", id="fig7-depth", marks=SLOW),
    pytest.param("fig8_mup", "", "mup-full_qkln-on", id="fig8-mup-full"),
    pytest.param("fig9_prediction", "", None, id="fig9"),
    pytest.param("fig10_forced_logits", "", "kappa-1000", id="fig10-forced"),
    pytest.param("fig10_forced_logits", "", "bigram", id="fig10-bigram"),
    pytest.param("fig11_grad_rms", "", "eps-1e-15", id="fig11-eps", marks=SLOW),
    pytest.param("figC1_output_norm", "", None, id="figC1", marks=SLOW),
    pytest.param("ablations", "ablation=e7", None, id="e7", marks=SLOW),
    pytest.param("ablations", "ablation=e8", "qkln-full_width", id="e8-full-width"),
    pytest.param("ablations", "ablation=e9", "batch-64", id="e9", marks=SLOW),
    pytest.param("ablations", "ablation=e10", None, id="e10", marks=SLOW),
    pytest.param("ablations", "ablation=e11", "squared-relu_qkln-off", id="e11-squared-relu"),
    pytest.param("ablations", "ablation=e14", "lr-scale-param_rms", id="e14-param-rms"),
]


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory) -> str:
  """An embedded-corpus cache built once per session (never the user's home)."""
  cache = str(tmp_path_factory.mktemp("embedded_cache"))
  embedded_corpus.ensure_token_files(cache, 0.01)
  return cache


def test_every_experiment_has_a_cpu_run():
  covered = {tuple(run.values[:2]) for run in RUNS}
  assert covered == set(SPECS) - NO_CPU_RUN


@pytest.mark.parametrize(("name", "extra", "arm"), RUNS)
@pytest.mark.slow
def test_cpu_point_trains(name, extra, arm, embedded_cache, tmp_path):
  g = get_grid(name, extra, "cpu")
  candidates = [p for p in g.points if arm is None or p.arm == arm]
  assert candidates, f"no arm {arm!r} in {g.experiment}"
  point = min(candidates, key=lambda p: (sizes.non_embedding_params(p.size), p.lr))
  config = grid.config_for(point, "cpu")
  grid.apply_overrides(config, {**TINY, "data.embedded.cache_dir": embedded_cache})
  summary = train.train_and_evaluate(config, str(tmp_path / point.name))
  assert summary["status"] in results.FINISHED, summary
  rows = (tmp_path / point.name / "metrics.jsonl").read_text().splitlines()
  assert len(rows) == 3
