"""Figs 3, 4: output-logit divergence, and how z-loss and weight decay prevent it.

Arms: z-loss 1e-4 on / off × independent weight decay 1e-4 / 0, all with qk-layernorm per head
(PAPER.md §4 Fig 3): `zloss-on_wd-on` (the default recipe), `zloss-off_wd-on`,
`zloss-on_wd-off`, `zloss-off_wd-off`. Sizes: the Fig 1 ladder plus the 2.4M model d256-L3
(paper, gpu) or the cpu sizes; LRs: the scale's grid.

Makes: final eval loss vs LR per size and arm, LR sensitivity vs parameters (Fig 3). Fig 4 is
one run of this grid: d256-L3 at LR 0.1 with no weight decay, z-loss on vs off
(`d256-L3_lr1e-01_zloss-on_wd-off` against `..._zloss-off_wd-off`); plot `output_logit/mean`,
`output_logit/log_z_mean` and `train_loss` over training (figures.metric_over_training). At
cpu scale look at d64-L2 at the high LRs of the wd-off arms instead.

  python -m launch.sweep --experiment=configs/fig3_output_logit_divergence.py:scale=cpu \
      --out=results/fig3
  python -m analysis.report results/fig3
"""

from configs import grid

ZLOSS_ARMS = {"zloss-on": {"loss.z_loss": 1e-4}, "zloss-off": {"loss.z_loss": 0.0}}
WD_ARMS = {
    "wd-on": {"opt.weight_decay_mode": "independent", "opt.weight_decay": 1e-4},
    "wd-off": {"opt.weight_decay_mode": "independent", "opt.weight_decay": 0.0},
}
ARMS = {label: {"model.qk_layernorm": "per_head", **overrides}
        for label, overrides in grid.cross_arms(ZLOSS_ARMS, WD_ARMS).items()}

# Fig 4's model (the 2.4M d256-L3) at each scale; it joins the ladder.
FIG4_SIZE = {"cpu": "d64-L2", "gpu": "d256-L3", "paper": "d256-L3"}
FIG4_LR = 0.1


def default_sizes(scale: str) -> tuple[str, ...]:
  return tuple(dict.fromkeys((FIG4_SIZE[scale],) + grid.SCALE_SIZES[scale]))


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg)
  scale = kv["scale"]
  return grid.Grid(
      experiment="fig3_output_logit_divergence", scale=scale, figure="Fig 3, Fig 4",
      points=grid.sweep(ARMS, grid.sizes_arg(kv, default_sizes(scale)), grid.SCALE_LRS[scale]),
      sensitivity=grid.single_sensitivity(scale))


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
