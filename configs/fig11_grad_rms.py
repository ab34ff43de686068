"""Figs 11, 12, 13, E.12, E.13, E.15: gradient RMS shrinks with scale and LR to AdamW's ε.

Arms (paper §3.4, Figs 11-13):
  qkln-on          the default model over the Fig 1 ladder × the scale's LR grid (Figs 11,
                   E.12, E.13); the same points as fig1's `qkln-on` arm (equal run names and
                   configs: `cp -r results/fig1/*_qkln-on results/fig11/` and they are skipped)
  eps-1e-06        AdamW ε = 1e-6 (Fig E.15, diverges at paper scale)
  eps-1e-08        ε = 1e-8, the default
  eps-1e-15        ε = 1e-15 (Fig 12: lower loss, no collapse of grad RMS)
The ε arms are one run each at the top of the sensitivity range (LR 0.3) on the size beyond the
ladder: d4096-L24 (4.8B) at paper scale, d768-L12 at gpu scale; at cpu scale on the largest
ladder size, d128-L4, with ε = 1e-4 and 1e-3 besides (CPU_EXTRA_EPSILONS). At cpu scale LR 0.3
is 30× above that model's optimum, where any ε that damps the update helps as an LR cut would;
so the ε arms are also trained at 1e-2, the default model's best LR there (EPS_NEAR_OPTIMUM_LR),
and the claim about ε = 1e-6 is judged at that LR.

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
# At cpu scale the gradient RMS stays near 1e-4, far above the paper's ε values, so two more ε
# sit at and above it: the regime the paper reaches at 4.8B, where ε ≈ grad RMS.
CPU_EXTRA_EPSILONS = (1e-4, 1e-3)
# The model of the ε sweep: the size beyond the ladder (4.8B at paper scale); at cpu scale the
# largest ladder size, whose gradients are the smallest.
EPS_SIZE = {"cpu": grid.SCALE_SIZES["cpu"][-1], "gpu": grid.SCALE_TARGET_SIZE["gpu"],
            "paper": grid.SCALE_TARGET_SIZE["paper"]}


# At cpu scale: the LR of the grid at the default d128-L4's optimum (reference runs, Fig 1).
EPS_NEAR_OPTIMUM_LR = {"cpu": 1e-2}


def eps_arms(scale: str = "paper") -> dict[str, dict]:
  epsilons = EPSILONS + (CPU_EXTRA_EPSILONS if scale == "cpu" else ())
  return {f"eps-{eps:.0e}": {"model.qk_layernorm": "per_head", "opt.eps": eps}
          for eps in epsilons}


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg)
  scale = kv["scale"]
  lrs = grid.SCALE_LRS[scale]
  points = grid.sweep({ARM: grid.QKLN_ARMS[ARM]}, grid.sizes_arg(kv, grid.SCALE_SIZES[scale]), lrs)
  # The paper's LR 0.3: the top of the sensitivity range.
  eps_lrs = (grid.SCALE_RANGE[scale][1],) + ((EPS_NEAR_OPTIMUM_LR[scale],)
                                              if scale in EPS_NEAR_OPTIMUM_LR else ())
  points += grid.sweep(eps_arms(scale), [EPS_SIZE[scale]], eps_lrs)
  return grid.Grid(
      experiment="fig11_grad_rms", scale=scale,
      figure="Fig 11, Fig 12, Fig 13, Fig E.12, Fig E.13, Fig E.15", points=points,
      sensitivity=grid.single_sensitivity(scale))


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
