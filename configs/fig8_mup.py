"""Figs 8, E.4, E.5: μParam against LR sensitivity, with and without qk-layernorm.

Arms (paper §3.2.4, Fig 8; docs/paper_notes.md#fig-8-muparam): parametrization ×
qk-layernorm per head / off, labels `<param>_qkln-on|off` with <param> one of
  standard           the default recipe
  mup-simple         (i) LR of every linear layer × base-fan-in / fan-in
  mup-intermediate   (i) + (ii) head init std sqrt(base-fan-in) / fan-in
  mup-full           (i) + (ii) + (iii) attention scale 1/d_h + (iv) zero-init queries
The base width is the smallest model's: 256 at gpu and paper scale (paper §3.2.4), 64 at
cpu scale (`model.mup_base_width`, set on the μParam arms). Sizes: the Fig 1 ladder; LRs: the
scale's grid, extended one step up (to 1.0 at paper scale, 3.0 at cpu scale) for
`mup-full_qkln-on`, which trains at LR 1 in Fig E.5. LR sensitivity keeps the grid's range
(μParam's per-layer LR multipliers leave it comparable, docs/paper_notes.md#lr-sensitivity).

Makes: final eval loss vs LR per size and arm (Fig 8 top: mup-simple_qkln-on against
standard_qkln-on; Fig E.4: the qkln-off arms; Fig E.5: mup-intermediate and mup-full), LR
sensitivity vs parameters (Fig 8 bottom).

cpu scale: the two smaller sizes (d64-L2, d128-L2: widths 64 and 128) and only the arms the
claims read (CPU_ARMS): standard on/off (fig1's runs), mup-simple on/off and mup-full on. The
arms the claim compares across widths (WIDTH_ARMS) also train d256-L2, so that widths span 4×:
over 64-128 the standard model's best LR did not move, which left μParam nothing to hold steady
(the paper's widths span 8×; d512-L2, 4× the work of d256-L2, would not fit the budget).

Not here: Fig E.6 (standard parametrization with only the 1/d_h attention scale) needs a model
option that scales attention by 1/d_h without the rest of μParam (full); model.parametrization
has no such value, so it is skipped.

  python -m launch.sweep --experiment=configs/fig8_mup.py:scale=cpu --out=results/fig8
  (`,seeds=0+1` trains more seeds; the design and the reference runs have seed 0)
  python -m analysis.report results/fig8
"""

from configs import grid

PARAMETRIZATIONS = {
    "standard": "standard",
    "mup-simple": "mup_simple",
    "mup-intermediate": "mup_intermediate",
    "mup-full": "mup_full",
}
# μParam's base-fan-in: the width of the smallest model tested at each scale.
MUP_BASE_WIDTH = {"cpu": 64, "gpu": 256, "paper": 256}
# Fig E.5: μParam (full) with qk-layernorm trains at LR 1, so its LR grid goes one step further.
EXTENDED_ARM = "mup-full_qkln-on"


# At cpu scale only the arms the claims read (standard ones are fig1's runs).
CPU_ARMS = ("standard_qkln-on", "standard_qkln-off", "mup-simple_qkln-on", "mup-simple_qkln-off",
            "mup-full_qkln-on")


# The arms whose claim parts compare widths; at cpu scale they also train the widest size.
WIDTH_ARMS = ("standard_qkln-on", "mup-simple_qkln-on", "mup-simple_qkln-off")
CPU_WIDEST = "d256-L2"


def arms(scale: str) -> dict[str, dict]:
  param_arms = {}
  for label, parametrization in PARAMETRIZATIONS.items():
    overrides = {"model.parametrization": parametrization}
    if parametrization != "standard":
      overrides["model.mup_base_width"] = MUP_BASE_WIDTH[scale]
    param_arms[label] = overrides
  crossed = grid.cross_arms(param_arms, grid.QKLN_ARMS)
  return {k: v for k, v in crossed.items() if scale != "cpu" or k in CPU_ARMS}


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg)
  scale = kv["scale"]
  sizes = grid.sizes_arg(kv, grid.SCALE_SECONDARY_SIZES[scale])
  lrs = grid.SCALE_LRS[scale]
  seeds = grid.seeds_arg(kv)
  points = []
  for label, overrides in arms(scale).items():
    arm_lrs = grid.extend_lrs(lrs, above=1) if label == EXTENDED_ARM else lrs
    widest = scale == "cpu" and label in WIDTH_ARMS and not kv.get("sizes")
    points += grid.sweep({label: overrides}, sizes + (CPU_WIDEST,) * widest, arm_lrs, seeds)
  return grid.Grid(
      experiment="fig8_mup", scale=scale, figure="Fig 8, Fig E.4, Fig E.5", points=points,
      sensitivity=grid.single_sensitivity(scale))


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
