"""Fig 10: how large must attention logits be to break learning?

Arms (paper §3.3, Fig 10): `kappa-<κ>` for κ in {1, 10, 100, 1e3, 3e3, 1e4, 3e4}: queries and
keys pass through g(z) = sqrt(κ)·z / RMS(z) after RoPE (model.attention='forced',
model.forced_kappa), with qk-layernorm off, so every logit is forced to size ~κ (the largest
possible is κ·sqrt(d_h), docs/paper_notes.md#choices-where-the-paper-is-silent). Plus
`bigram`: the same model with no blocks (embedding → final LayerNorm → head, d<width>-L0), the
reference line. One model, the "10M" d512-L3 at gpu and paper scale (d128-L2 at cpu scale;
`sizes=a+b` to change, each size gets its own bigram), one LR, 1e-2 (`lr=` to change, e.g. to
the best LR of that size in Fig 1).

Makes: final eval loss vs κ with the bigram loss as a line. The report draws one point per arm;
the κ axis is the arm's `model.forced_kappa` in each run's config.json.

  python -m launch.sweep --experiment=configs/fig10_forced_logits.py:scale=cpu \
      --out=results/fig10
  python -m analysis.report results/fig10
"""

from configs import grid
from stability import sizes as sizes_lib

KAPPAS = (1.0, 10.0, 100.0, 1e3, 3e3, 1e4, 3e4)
MODEL = {"cpu": "d128-L2", "gpu": "d512-L3", "paper": "d512-L3"}
LR = 1e-2
BIGRAM = "bigram"


def kappa_arms() -> dict[str, dict]:
  return {f"kappa-{kappa:g}": {"model.attention": "forced", "model.qk_layernorm": "off",
                               "model.forced_kappa": kappa} for kappa in KAPPAS}


def bigram_size(size: str) -> str:
  """The zero-layer model of the same width: `d512-L3` -> `d512-L0`."""
  d_model, _, heads = sizes_lib.parse(size)
  return f"d{d_model}-L0" + ("" if heads == max(1, d_model // sizes_lib.HEAD_DIM) else f"-h{heads}")


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg, "lr")
  scale = kv["scale"]
  model_sizes = grid.sizes_arg(kv, [MODEL[scale]])
  lr = float(kv.get("lr", LR))
  bigrams = tuple(dict.fromkeys(bigram_size(s) for s in model_sizes))
  points = grid.sweep(kappa_arms(), model_sizes, [lr]) + grid.sweep({BIGRAM: {}}, bigrams, [lr])
  return grid.Grid(experiment="fig10_forced_logits", scale=scale, figure="Fig 10",
                   points=points)


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
