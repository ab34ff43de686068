"""Fig 5: longer warm-up lowers LR sensitivity, most for the larger models.

Arms: linear warm-up of 0.1×, 1× and 5× the scale's default, with the total steps fixed (paper
§3.2.1, Fig 5; the values are [unknown] in the paper). At paper scale that is 500, 5e3 (the default)
and 2.5e4 of 1e5 steps, i.e. 0.5%, 5% and 25% of training; at gpu scale 50, 500, 2500 of 1e4
(the same fractions); at cpu scale 3, 30, 150 of 300, so that the middle arm is the cpu default
like every other experiment's. Labels carry the step count (`warmup-5000`). Everything else is
the default recipe (qk-layernorm per head, z-loss, independent weight decay). Sizes: the Fig 1
ladder (the two smaller sizes at cpu scale, d64-L2 and d128-L2); LRs: the scale's grid.

Makes: final eval loss vs LR per size and arm, LR sensitivity vs parameters per warm-up.

  python -m launch.sweep --experiment=configs/fig5_warmup.py:scale=cpu --out=results/fig5
  python -m analysis.report results/fig5
"""

from configs import grid

# Warm-up as a multiple of the scale's default (5e3 of 1e5 steps at paper scale).
WARMUP_FACTORS = (0.1, 1.0, 5.0)


def arms(scale: str) -> dict[str, dict]:
  out = {}
  for factor in WARMUP_FACTORS:
    warmup = grid.scaled_steps(scale, "opt.warmup_steps", factor)
    out[f"warmup-{warmup}"] = {"model.qk_layernorm": "per_head", "opt.warmup_steps": warmup}
  return out


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg)
  scale = kv["scale"]
  return grid.Grid(
      experiment="fig5_warmup", scale=scale, figure="Fig 5",
      points=grid.sweep(arms(scale), grid.sizes_arg(kv, grid.SCALE_SECONDARY_SIZES[scale]),
                        grid.SCALE_LRS[scale]),
      sensitivity=grid.single_sensitivity(scale))


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
