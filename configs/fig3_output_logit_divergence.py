"""Figs 3, 4: output-logit divergence, and how z-loss and weight decay prevent it.

Arms: z-loss 1e-4 on / off × independent weight decay on / 0, all with qk-layernorm per head
(paper §3.1.2): `zloss-on_wd-on` (the default recipe), `zloss-off_wd-on`, `zloss-on_wd-off`,
`zloss-off_wd-off`. Sizes: the Fig 1 ladder plus the 2.4M model d256-L3 (paper, gpu); LRs: the
scale's grid.

cpu scale: the two smaller sizes (d64-L2, d128-L2) and the LRs from 3e-3 up (1e-3 is outside
the sensitivity range and nothing drifts there). "wd-on" and "zloss-on" keep the paper's totals
over the run (grid.matched_total): decay λ·T = 1e-4 × 1e5 = 10, so λ = 1/30 over 300 steps, and
z-loss coefficient × T = 10, so 1/30 too. Both act a little every step; with the paper's
coefficients, 300 steps shrink the weights by 3% and pull log Z (about ln V ≈ 6 at
initialization) by almost nothing, and each "on" arm would be its "off" arm.

Long horizon (cpu scale only): the drift the paper describes comes "toward the end of
training", after 1e5 steps. At cpu scale Fig 4's pair (d64-L2, LR 0.1, no decay, z-loss on and
off) is also trained ten times longer, 3000 steps with a 300-step warm-up and the z-loss
matched to that length (arms `..._T3000`). analysis/claims.py judges the drift, log Z and the
late loss on the longest horizon a sweep has; these arms have one LR and no LR sensitivity.
Why not also the paper's 32k-id vocabulary: the embedded corpus holds about 1.5M byte tokens
(its train split), and 3000 steps of 16 × 128 already read it four times. A subword vocabulary
would shorten it two to four times more, so a long run would revisit each token 10-20 times and
over-fitting would confound a late rise of the eval loss. That test needs a larger corpus (C4,
the gpu scale).

Makes: final eval loss vs LR per size and arm, LR sensitivity vs parameters (Fig 3). Fig 4 is
one pair of runs of this grid: the smallest model at LR 0.1 with no weight decay, z-loss on vs
off (`d256-L3_lr1e-01_zloss-on_wd-off` against `..._zloss-off_wd-off`); plot
`output_logit/mean`, `output_logit/log_z_mean` and `train_loss` over training
(figures.metric_over_training). analysis/claims.py reads the same pair.

  python -m launch.sweep --experiment=configs/fig3_output_logit_divergence.py:scale=cpu \
      --out=results/fig3
  python -m analysis.report results/fig3
"""

from configs import grid

# Fig 4's model (the 2.4M d256-L3) at each scale; it joins the ladder.
FIG4_SIZE = {"cpu": "d64-L2", "gpu": "d256-L3", "paper": "d256-L3"}
FIG4_LR = 0.1
# The long-horizon pair at cpu scale: ten times the cpu run (docstring).
LONG_STEPS = 3000
LONG_SUFFIX = f"_T{LONG_STEPS}"


def zloss_arms(scale: str) -> dict[str, dict]:
  return {"zloss-on": {"loss.z_loss": grid.matched_total(scale, 1e-4)},
          "zloss-off": {"loss.z_loss": 0.0}}


def wd_arms(scale: str) -> dict[str, dict]:
  decay = grid.matched_decay(scale)
  return {
      "wd-on": {"opt.weight_decay_mode": "independent", "opt.weight_decay": decay},
      "wd-off": {"opt.weight_decay_mode": "independent", "opt.weight_decay": 0.0},
  }


def arms(scale: str) -> dict[str, dict]:
  return {label: {"model.qk_layernorm": "per_head", **overrides}
          for label, overrides in grid.cross_arms(zloss_arms(scale), wd_arms(scale)).items()}


def default_sizes(scale: str) -> tuple[str, ...]:
  return tuple(dict.fromkeys((FIG4_SIZE[scale],) + grid.SCALE_SECONDARY_SIZES[scale]))


def lrs(scale: str) -> tuple[float, ...]:
  lo = grid.SCALE_RANGE[scale][0]
  return tuple(lr for lr in grid.SCALE_LRS[scale] if lr >= lo)


def long_arms(scale: str) -> dict[str, dict]:
  """Fig 4's pair (no decay, z-loss on and off) over LONG_STEPS, the z-loss matched to them."""
  zloss = grid.matched_total(scale, 1e-4) * grid.SCALE_SETTINGS[scale]["train.steps"] / LONG_STEPS
  longer = {"train.steps": LONG_STEPS, "opt.warmup_steps": LONG_STEPS // 10,
            "train.ckpt_every": LONG_STEPS // 6}
  pair = {"zloss-on_wd-off": {"loss.z_loss": zloss}, "zloss-off_wd-off": {"loss.z_loss": 0.0}}
  return {label + LONG_SUFFIX: {**arms(scale)[label], **longer, **overrides}
          for label, overrides in pair.items()}


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg)
  scale = kv["scale"]
  points = grid.sweep(arms(scale), grid.sizes_arg(kv, default_sizes(scale)), lrs(scale))
  if scale == "cpu":
    points += grid.sweep(long_arms(scale), [FIG4_SIZE[scale]], [FIG4_LR])
  return grid.Grid(
      experiment="fig3_output_logit_divergence", scale=scale, figure="Fig 3, Fig 4",
      points=points, sensitivity=grid.single_sensitivity(scale))


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
