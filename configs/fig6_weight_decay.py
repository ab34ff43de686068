"""Fig 6: weight decay independent of the LR gives lower LR sensitivity than LR-coupled decay.

Arms (paper §3.2.2, Fig 6; docs/paper_notes.md#optimizer-and-schedule), qk-layernorm per
head in both:
  wd-independent  θ ← θ − s_t(ηΔ + λθ), λ = 1e-4 (the default recipe)
  wd-coupled      θ ← θ − s_t·η(Δ + λθ), λ = 0.1 (AdamW as in PyTorch / Optax)
Sizes: the Fig 1 ladder (its two smaller sizes at cpu scale). λ keeps the paper's values at
every scale: over 300 cpu steps the independent λ = 1e-4 hardly decays at all, while the coupled
λ·η·T stays large at high LR (0.1 × 0.1 × 300 = 3), so at cpu scale this compares LR-coupled
decay with next to none; the verdict says so. LRs: the scale's grid; the coupled arm gets one more LR below it
(1e-4 at gpu and paper scale, 3e-4 at cpu scale), because its LR sensitivity is the minimum
over two ranges, [1e-4, 1e-1] and [3e-4, 3e-1] at paper scale
(docs/paper_notes.md#lr-sensitivity); `sensitivity` says so for that arm, the independent arm
uses the single range.

Makes: final eval loss vs LR per size and arm, LR sensitivity vs parameters.

  python -m launch.sweep --experiment=configs/fig6_weight_decay.py:scale=cpu --out=results/fig6
  python -m analysis.report results/fig6
"""

from configs import grid

INDEPENDENT = "wd-independent"
COUPLED = "wd-coupled"
ARMS = {
    INDEPENDENT: {"model.qk_layernorm": "per_head", "opt.weight_decay_mode": "independent",
                  "opt.weight_decay": 1e-4},
    COUPLED: {"model.qk_layernorm": "per_head", "opt.weight_decay_mode": "coupled",
              "opt.weight_decay": 0.1},
}


def coupled_lrs(scale: str) -> tuple[float, ...]:
  """The scale's grid with one more LR below it (1e-4 at paper scale)."""
  return grid.extend_lrs(grid.SCALE_LRS[scale], below=1)


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg)
  scale = kv["scale"]
  sizes = grid.sizes_arg(kv, grid.SCALE_SECONDARY_SIZES[scale])
  lrs = coupled_lrs(scale)
  ranges = [[lrs[0], lrs[-2]], [lrs[1], lrs[-1]]]  # [1e-4, 1e-1] and [3e-4, 3e-1]
  points = (grid.sweep({INDEPENDENT: ARMS[INDEPENDENT]}, sizes, grid.SCALE_LRS[scale])
            + grid.sweep({COUPLED: ARMS[COUPLED]}, sizes, lrs))
  return grid.Grid(
      experiment="fig6_weight_decay", scale=scale, figure="Fig 6", points=points,
      sensitivity={**grid.single_sensitivity(scale),
                   "arms": {COUPLED: {"rule": "min_of_ranges", "ranges": ranges}}})


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
