"""Fig 6: weight decay independent of the LR gives lower LR sensitivity than LR-coupled decay.

Arms (paper §3.2.2, Fig 6; docs/paper_notes.md#optimizer-and-schedule), qk-layernorm per
head in all:
  wd-independent          θ ← θ − s_t(ηΔ + λθ), λ = 1e-4 (the paper's; the default recipe)
  wd-coupled              θ ← θ − s_t·η(Δ + λθ), λ = 0.1 (AdamW as in PyTorch / Optax)
  wd-independent-matched  as wd-independent with the paper's total decay over the scale's steps,
                          λ = 1e-4 × 1e5 / steps (`grid.matched_decay`; 1/30 at cpu scale), at
                          every scale that trains fewer steps than the paper
Sizes: the Fig 1 ladder (its two smaller sizes at cpu scale). Over 300 cpu steps the paper's
independent λ = 1e-4 hardly decays at all (λ·T = 0.03 against the paper's 10), while the coupled
λ·η·T stays large at high LR (0.1 × 0.1 × 300 = 3), so at cpu scale the paper's values compare
coupled decay with next to none. The claim is still judged on them: they keep the paper's
relation between the arms (at LR 1e-3 both decay by 1e-4 per step). The matched arm is reported
beside it; the coupled arm cannot be matched the same way (λ = 33 at cpu scale, and η·λ ≥ 1
from LR 0.03 on).
LRs: the scale's grid. The coupled arm's LR sensitivity is the minimum over the scale's range
and the same range half a decade lower ([1e-4, 1e-1] and [3e-4, 3e-1] at paper scale, [1e-3,
0.1] and [3e-3, 0.3] at cpu scale; docs/paper_notes.md#lr-sensitivity), so at gpu and paper
scale it gets one more LR, 1e-4; `sensitivity` says so for that arm, and the independent arm
uses the single range.

Makes: final eval loss vs LR per size and arm, LR sensitivity vs parameters.

  python -m launch.sweep --experiment=configs/fig6_weight_decay.py:scale=cpu --out=results/fig6
  python -m analysis.report results/fig6
"""

import math

from configs import grid

INDEPENDENT = "wd-independent"
COUPLED = "wd-coupled"
MATCHED = "wd-independent-matched"
ARMS = {
    INDEPENDENT: {"model.qk_layernorm": "per_head", "opt.weight_decay_mode": "independent",
                  "opt.weight_decay": 1e-4},
    COUPLED: {"model.qk_layernorm": "per_head", "opt.weight_decay_mode": "coupled",
              "opt.weight_decay": 0.1},
}


def independent_arms(scale: str) -> dict[str, dict]:
  """The independent arm, and the matched one where the scale's steps make its λ another."""
  arms = {INDEPENDENT: ARMS[INDEPENDENT]}
  matched = grid.matched_decay(scale)
  if not math.isclose(matched, ARMS[INDEPENDENT]["opt.weight_decay"]):
    arms[MATCHED] = {**ARMS[INDEPENDENT], "opt.weight_decay": matched}
  return arms


def coupled_ranges(scale: str) -> list[list[float]]:
  """The scale's LR-sensitivity range and the same range half a decade lower: [1e-4, 1e-1] and
  [3e-4, 3e-1] at paper scale, [1e-3, 0.1] and [3e-3, 0.3] at cpu scale."""
  lo, hi = grid.SCALE_RANGE[scale]
  return [[grid.half_decade(lo, up=False), grid.half_decade(hi, up=False)], [lo, hi]]


def coupled_lrs(scale: str) -> tuple[float, ...]:
  """The scale's grid, plus the bottom of the lower range if the grid lacks it (1e-4 at paper
  scale; the cpu grid already has 1e-3)."""
  return tuple(sorted(set(grid.SCALE_LRS[scale]) | {coupled_ranges(scale)[0][0]}))


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg)
  scale = kv["scale"]
  sizes = grid.sizes_arg(kv, grid.SCALE_SECONDARY_SIZES[scale])
  points = (grid.sweep(independent_arms(scale), sizes, grid.SCALE_LRS[scale])
            + grid.sweep({COUPLED: ARMS[COUPLED]}, sizes, coupled_lrs(scale)))
  return grid.Grid(
      experiment="fig6_weight_decay", scale=scale, figure="Fig 6", points=points,
      sensitivity={**grid.single_sensitivity(scale),
                   "arms": {COUPLED: {"rule": "min_of_ranges",
                                      "ranges": coupled_ranges(scale)}}})


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
