"""Figs 11, 12, 13, E.12, E.13, E.15: gradient RMS shrinks with scale and LR to AdamW's ε.

Arms (PAPER.md §4 Figs 11-13):
  qkln-on          the default model over the Fig 1 ladder × the scale's LR grid (Figs 11,
                   E.12, E.13); the same points as fig1's `qkln-on` arm (equal run names and
                   configs: `cp -r results/fig1/*_qkln-on results/fig11/` and they are skipped)
  eps-1e-06        AdamW ε = 1e-6 (Fig E.15, diverges at paper scale)
  eps-1e-08        ε = 1e-8, the default
  eps-1e-15        ε = 1e-15 (Fig 12: lower loss, no collapse of grad RMS)
The ε arms are one run each at the scale's top LR on the size beyond its ladder: d4096-L24
(4.8B) at LR 0.3 at paper scale, d768-L12 at 0.3 at gpu scale, d128-L4 at 1.0 at cpu scale.

Makes: grad RMS of block 0's MLP-in kernel (`grad_rms/block_0/mlp/wi/kernel`) averaged over the
final 500 steps vs parameters per LR and vs LR per size (Fig 11 left and middle:
figures.rms_vs(..., eps=1e-8) with x="num_params" or "lr"), and across block index (Fig 11
right: `grad_rms/block_<i>/mlp/wi/kernel` for each i); the same for the key projection
(Fig E.12, `grad_rms/block_0/attn/wk/kernel`); grad RMS and unscaled update RMS
(`update_rms/block_<i>/mlp/wi/kernel`, the Adam direction without decay) over training (Figs 13,
E.13: figures.metric_over_training); the loss of each ε arm (Figs 12, E.15).

  python -m launch.sweep --experiment=configs/fig11_grad_rms.py:scale=cpu --out=results/fig11
  python -m analysis.report results/fig11
"""

from configs import grid

ARM = "qkln-on"
EPSILONS = (1e-6, 1e-8, 1e-15)


def eps_arms() -> dict[str, dict]:
  return {f"eps-{eps:.0e}": {"model.qk_layernorm": "per_head", "opt.eps": eps}
          for eps in EPSILONS}


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg)
  scale = kv["scale"]
  lrs = grid.SCALE_LRS[scale]
  points = grid.sweep({ARM: grid.QKLN_ARMS[ARM]}, grid.sizes_arg(kv, grid.SCALE_SIZES[scale]), lrs)
  points += grid.sweep(eps_arms(), [grid.SCALE_TARGET_SIZE[scale]], [lrs[-1]])
  return grid.Grid(
      experiment="fig11_grad_rms", scale=scale,
      figure="Fig 11, Fig 12, Fig 13, Fig E.12, Fig E.13, Fig E.15", points=points,
      sensitivity=grid.single_sensitivity(scale))


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
