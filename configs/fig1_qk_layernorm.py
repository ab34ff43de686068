"""Figs 1, 2, E.1: qk-layernorm against attention-logit growth, across LRs and model sizes.

Arms: qk-layernorm per head (the default) vs off; everything else default (z-loss, independent
weight decay). Makes: final eval loss vs LR per size (Fig 1 top), LR sensitivity vs parameters
(Fig 1 bottom), max attention logit of block 0 over training (Fig 2), q/k norms and cosine (E.1).

  python -m launch.sweep --experiment=configs/fig1_qk_layernorm.py:scale=cpu --out=results/fig1
  python -m analysis.report results/fig1
"""

from configs import grid

# Two replicates at cpu scale, so that the gap between the arms is compared with the spread
# between seeds; one at gpu and paper scale (pass seeds=0+1 for more).
SEEDS = {"cpu": (0, 1), "gpu": (0,), "paper": (0,)}


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg)
  scale = kv["scale"]
  return grid.Grid(
      experiment="fig1_qk_layernorm", scale=scale, figure="Fig 1, Fig 2, Fig E.1",
      points=grid.sweep(grid.QKLN_ARMS, grid.sizes_arg(kv, grid.SCALE_SIZES[scale]),
                        grid.SCALE_LRS[scale], grid.seeds_arg(kv, SEEDS[scale])),
      sensitivity=grid.single_sensitivity(scale))


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
