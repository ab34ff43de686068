"""Figs 7, E.2, E.3: scaling width vs scaling depth, with and without qk-layernorm.

Arms (paper §3.2.3, Fig 7): `width_qkln-on`, `width_qkln-off` scale d_model at a fixed depth
(heads grow with width, head dim 64); `depth_qkln-on`, `depth_qkln-off` scale the number of
layers at a fixed width. Each arm has its own sizes:
  paper  width: stability/sizes.py WIDTH_SWEEP (d256..d2048, L=6); depth: DEPTH_SWEEP (L3..L48, d=512)
  gpu    width: d256/d512/d768 at L=6;  depth: L3/L6/L12 at d=512
  cpu    width: d64/d128/d256 at L=2;   depth: L2/L4/L8/L16 at d=64; qk-layernorm on only (the
         claim is about the qk-layernorm models; E.2 is not checked at cpu scale)
At cpu scale the claim compares two slopes, and a seed spread of sensitivity (about 0.09) can
tilt each by spread/span: over the 0.6 decades of parameters of d64-d128 and of L2-L8 the
tolerance was 0.31 per decade, over five times the difference those runs showed (-0.055).
d256-L2 and d64-L16 give 1.2 decades of width (0.1M-1.6M) and 0.9 of depth (0.1M-0.8M), which
cuts it to about 0.18, within the 40-minute budget of an experiment (a run of either takes
about a minute on two cores; the next sizes, d512-L2 and d64-L32, are 4× and 2× the work).
d256-L2 with qk-layernorm is the default recipe, shared with configs/fig8_mup.py.
Overrides: `width=a+b`, `depth=a+b` (or `sizes=a+b` for both). LRs: the scale's grid.

Makes: final eval loss vs LR per size and arm (Fig 7 and, for the qkln-off arms, Fig E.2), LR
sensitivity vs parameters for scale-width vs scale-depth (Fig 7 bottom). Fig E.3 (best loss
over the LR sweep vs parameters) also needs the joint width+depth ladder: that is the
`qkln-on` arm of configs/fig1_qk_layernorm.py at the same scale (not repeated here).

  python -m launch.sweep --experiment=configs/fig7_width_depth.py:scale=cpu --out=results/fig7
  python -m analysis.report results/fig7
"""

from configs import grid
from stability import sizes

WIDTH = {"cpu": ("d64-L2", "d128-L2", "d256-L2"), "gpu": ("d256-L6", "d512-L6", "d768-L6"),
         "paper": sizes.WIDTH_SWEEP}
DEPTH = {"cpu": ("d64-L2", "d64-L4", "d64-L8", "d64-L16"),
         "gpu": ("d512-L3", "d512-L6", "d512-L12"), "paper": sizes.DEPTH_SWEEP}


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg, "width", "depth")
  scale = kv["scale"]
  swept = {
      "width": tuple(kv["width"].split("+")) if kv.get("width") else grid.sizes_arg(
          kv, WIDTH[scale]),
      "depth": tuple(kv["depth"].split("+")) if kv.get("depth") else grid.sizes_arg(
          kv, DEPTH[scale]),
  }
  points = []
  for dimension, size_list in swept.items():
    qkln = {"qkln-on": grid.QKLN_ARMS["qkln-on"]} if scale == "cpu" else grid.QKLN_ARMS
    arms = grid.cross_arms({dimension: {}}, qkln)
    points += grid.sweep(arms, size_list, grid.SCALE_LRS[scale])
  return grid.Grid(
      experiment="fig7_width_depth", scale=scale, figure="Fig 7, Fig E.2, Fig E.3",
      points=points, sensitivity=grid.single_sensitivity(scale))


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
