"""Figs E.7-E.11, E.14: the extra ablations of §3.2.5 and App. E, one grid per ablation.

Select one with `ablation=<name>` (required); each is its own experiment (and results folder).
All start from the default recipe (qk-layernorm per head, z-loss 1e-4, independent weight decay
1e-4, warm-up 5e3 of 1e5 steps at paper scale) over the Fig 1 ladder × the scale's LR grid
(docs/paper_notes.md#figs-e7-e11-e14-ablations; the sizes of these figures are [unknown]:
narrow them with `sizes=a+b`).

  e7   Fig E.7 `e7_steps`: total steps 0.5×, 1×, 2× the scale's (5e4 / 1e5 / 2e5 at paper
       scale), warm-up kept at the scale's default; arms `steps-<n>`.
  e8   Fig E.8 `e8_qkln_granularity`: qk-layernorm per head (d_h params, the default) vs over
       the full width (d_model params, before the head split); arms `qkln-per_head`,
       `qkln-full_width`.
  e9   Fig E.9 `e9_batch_size`: batch 1×, 2×, 4× the scale's (256 / 512 / 1024 at paper scale)
       with steps ÷1, ÷2, ÷4 so that tokens stay fixed; the warm-up is [unknown] in the paper and
       here shrinks with the steps (same warm-up tokens: 5e3 / 2.5e3 / 1.25e3); the eval batch
       stays at the scale's batch so every arm is scored on the same tokens; arms `batch-<n>`.
  e10  Fig E.10 `e10_weight_decay`: independent weight decay λ in {0, 1e-5, 1e-4, 1e-3} (values
       [unknown] in the paper); arms `wd-<λ>`.
  e11  Fig E.11 `e11_pointwise_attention`: softmax vs squared ReLU scaled by 1/sqrt(seq_len)
       (model.attention squared_relu), each with qk-layernorm off and on; arms
       `softmax_qkln-off`, `softmax_qkln-on`, `squared-relu_qkln-off`, `squared-relu_qkln-on`.
  e14  Fig E.14 `e14_param_rms_lr`: each parameter's LR × max(RMS(p), 1e-3) (Adafactor's
       relative step, opt.lr_scale param_rms) vs none; arms `lr-scale-none`,
       `lr-scale-param_rms`. LR sensitivity is not comparable here
       (docs/paper_notes.md#lr-sensitivity), so the grid sets none; read the loss vs LR curves.

cpu scale: the two smaller sizes (d64-L2, d128-L2), but for e10 and e11, which train d128-L2
alone (ABLATION_SIZES: their claims read one size). e10's λ keep the paper's totals λ·T
(grid.matched_decay): {0, 1e-5, 1e-4, 1e-3} × 1e5 steps = {0, 1, 10, 100}, which over 300 steps
is λ ∈ {0, 3.3e-3, 3.3e-2, 0.33}; the paper's λ themselves would all be no decay in 300 steps.

Makes: final eval loss vs LR per size and arm, and (but for e14) LR sensitivity vs parameters.

  python -m launch.sweep --experiment=configs/ablations.py:scale=cpu,ablation=e7 \
      --out=results/e7_steps
  python -m analysis.report results/e7_steps
(likewise ablation=e8, e9, e10, e11, e14 into results/<experiment name>).
"""

from typing import Callable

from configs import grid

QKLN_ON = {"model.qk_layernorm": "per_head"}
STEP_FACTORS = (0.5, 1.0, 2.0)
BATCH_FACTORS = (1, 2, 4)
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 1e-3)


def e7_steps(scale: str) -> dict[str, dict]:
  arms = {}
  for factor in STEP_FACTORS:
    steps = grid.scaled_steps(scale, "train.steps", factor)
    arms[f"steps-{steps}"] = {**QKLN_ON, "train.steps": steps}
  return arms


def e8_qkln_granularity(scale: str) -> dict[str, dict]:
  del scale
  return {f"qkln-{mode}": {"model.qk_layernorm": mode} for mode in ("per_head", "full_width")}


def e9_batch_size(scale: str) -> dict[str, dict]:
  settings = grid.SCALE_SETTINGS[scale]
  arms = {}
  for factor in BATCH_FACTORS:
    batch = settings["data.batch_size"] * factor
    arms[f"batch-{batch}"] = {
        **QKLN_ON, "data.batch_size": batch, "data.eval_batch_size": settings["data.batch_size"],
        "train.steps": grid.scaled_steps(scale, "train.steps", 1 / factor),
        "opt.warmup_steps": grid.scaled_steps(scale, "opt.warmup_steps", 1 / factor),
    }
  return arms


def e10_weight_decay(scale: str) -> dict[str, dict]:
  """λ ∈ {0, 1e-5, 1e-4, 1e-3} at paper scale; elsewhere the same totals λ·T (matched_decay)."""
  return {f"wd-{wd:.3g}": {**QKLN_ON, "opt.weight_decay_mode": "independent",
                           "opt.weight_decay": wd}
          for wd in (grid.matched_decay(scale, f / 1e-4) for f in WEIGHT_DECAYS)}


def e11_pointwise_attention(scale: str) -> dict[str, dict]:
  del scale
  attention = {"softmax": {"model.attention": "softmax"},
               "squared-relu": {"model.attention": "squared_relu"}}
  return grid.cross_arms(attention, {"qkln-off": grid.QKLN_ARMS["qkln-off"],
                                     "qkln-on": grid.QKLN_ARMS["qkln-on"]})


def e14_param_rms_lr(scale: str) -> dict[str, dict]:
  del scale
  return {f"lr-scale-{mode}": {**QKLN_ON, "opt.lr_scale": mode} for mode in ("none", "param_rms")}


# Narrower cpu sweeps where one size answers the question (the claim reads the largest).
ABLATION_SIZES = {("e10", "cpu"): ("d128-L2",), ("e11", "cpu"): ("d128-L2",)}

# name -> (experiment, figure, arms of a scale, whether LR sensitivity is meaningful)
ABLATIONS: dict[str, tuple[str, str, Callable[[str], dict[str, dict]], bool]] = {
    "e7": ("e7_steps", "Fig E.7", e7_steps, True),
    "e8": ("e8_qkln_granularity", "Fig E.8", e8_qkln_granularity, True),
    "e9": ("e9_batch_size", "Fig E.9", e9_batch_size, True),
    "e10": ("e10_weight_decay", "Fig E.10", e10_weight_decay, True),
    "e11": ("e11_pointwise_attention", "Fig E.11", e11_pointwise_attention, True),
    "e14": ("e14_param_rms_lr", "Fig E.14", e14_param_rms_lr, False),
}


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg, "ablation")
  scale = kv["scale"]
  name = kv.get("ablation")
  if name not in ABLATIONS:
    raise ValueError(f"ablation={name!r}: expected one of {', '.join(ABLATIONS)}, "
                     "e.g. configs/ablations.py:scale=cpu,ablation=e7")
  experiment, figure, arms, has_sensitivity = ABLATIONS[name]
  return grid.Grid(
      experiment=experiment, scale=scale, figure=figure,
      points=grid.sweep(arms(scale), grid.sizes_arg(kv, ABLATION_SIZES.get(
          (name, scale), grid.SCALE_SECONDARY_SIZES[scale])),
                        grid.SCALE_LRS[scale]),
      sensitivity=grid.single_sensitivity(scale) if has_sensitivity else None)


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
