"""Fig C.1: the RMS of Transformer block outputs vs model size, LR and block index.

One arm, `qkln-on`: the default model over the Fig 1 ladder × the scale's LR grid (paper
App. C). These are the same points as fig1's `qkln-on` arm (equal run names and configs): copy
those run folders into this sweep's folder and they are skipped
(`cp -r results/fig1/*_qkln-on results/figC1/`). Block-output RMS is logged for every block as
`block_out_rms/block_<i>`.

Makes: the RMS of block 2's output averaged over the final 500 steps vs parameters (one curve
per LR) and vs LR (one curve per size): figures.rms_vs with metric `block_out_rms/block_2` and
x="num_params" or "lr" (cpu sizes have two blocks: use `block_out_rms/block_1` there); and
across block index at the highest LR (`block_out_rms/block_<i>` for each i); besides the
report's loss vs LR.

  python -m launch.sweep --experiment=configs/figC1_output_norm.py:scale=cpu --out=results/figC1
  python -m analysis.report results/figC1
"""

from configs import grid

ARM = "qkln-on"


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg)
  scale = kv["scale"]
  return grid.Grid(
      experiment="figC1_output_norm", scale=scale, figure="Fig C.1",
      points=grid.sweep({ARM: grid.QKLN_ARMS[ARM]}, grid.sizes_arg(kv, grid.SCALE_SIZES[scale]),
                        grid.SCALE_LRS[scale]),
      sensitivity=grid.single_sensitivity(scale))


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
