"""Figs 1, 2, E.1: qk-layernorm against attention-logit growth, across LRs and model sizes.

Arms: qk-layernorm per head (the default) vs off; everything else default (z-loss, independent
weight decay). Makes: final eval loss vs LR per size (Fig 1 top), LR sensitivity vs parameters
(Fig 1 bottom), max attention logit of block 0 over training (Fig 2), q/k norms and cosine (E.1).

cpu scale (what `make reproduce` runs; `make demo` runs its smallest size, both seeds):
- sizes d64-L2, d128-L2, d128-L4 (0.1M, 0.4M, 0.8M non-embedding parameters): width, depth and
  heads grow together as in the paper's ladder, and each run takes 15-60 s on two CPU cores.
- head dim 64, the paper's, so d64 has one head and d128 two. Attention-logit growth is a
  per-head quantity (q·k/√d_h over d_h dimensions); a smaller head dim at small width would
  change the very statistic the figure is about, so the head dim stays and the head count drops.
- LRs 1e-3 … 1 (the paper's grid half a decade up); LR sensitivity over [3e-3, 0.3]: the top
  is the paper's 0.3, the highest LR at which the qk-layernorm models still train, and the
  bottom leaves out LRs that 300 steps under-train in both arms (configs/grid.py).
- three seeds (init and data order), so that the gap between arms is compared with the seed
  spread, and that spread is itself measured on more than one pair.

  python -m launch.sweep --experiment=configs/fig1_qk_layernorm.py:scale=cpu --out=results/fig1
  python -m analysis.report results/fig1
"""

from configs import grid

# Three replicates at cpu scale, so that the gap between the arms is compared with the spread
# between seeds (docs/paper_notes.md#criteria); one at gpu and paper scale (pass seeds=0+1 for more).
SEEDS = {"cpu": (0, 1, 2), "gpu": (0,), "paper": (0,)}


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
