"""Fig 9: predicting attention-logit-growth divergence of a large model from small ones.

One arm, `qkln-off` (qk-layernorm off, everything else default), over the Fig 1 ladder
(d512-L3 .. d2048-L24 at paper scale) × the scale's LR grid, plus one target run a size beyond
the ladder at one LR: d4096-L24 (4.8B) at LR 1e-2 at paper scale, the run the paper predicted
to diverge and trained (PAPER.md §4 Fig 9). At gpu scale the target is d768-L12 at 1e-2; at cpu
scale the ladder is d64-L1, d64-L2, d128-L2 (three sizes, for the quadratic) and the target
d128-L4 at 1e-2. Overrides: `sizes=a+b` (the ladder), `target=<size>`, `target_lr=<lr>`; the
paper chose the target after fitting the ladder, so re-run with the LR whose fit crosses 1e4.

The metric is the max attention logit of block 0 (`attn_logit_max/block_0`) at training step
2000, which train.log_every hits at gpu (50) and paper (100) scale. Training still runs the
full schedule (steps, warm-up and cosine as in Fig 1), so that the ladder points are the same
runs as fig1's `qkln-off` arm: copy those run folders into this sweep's folder and they are
skipped (`cp -r results/fig1/*_qkln-off results/fig9/`). cpu scale trains 300 steps, so there
the prediction uses the last logged step (analysis.prediction takes the last one <= 2000).

Makes: max logit vs parameters per LR with the quadratic fits in log-log space, the 1e4
threshold and the predicted vs measured logit of the target (analysis.prediction,
figures.max_logit_vs_params), besides the report's loss vs LR.

  python -m launch.sweep --experiment=configs/fig9_prediction.py:scale=cpu --out=results/fig9
  python -m analysis.report results/fig9
"""

from configs import grid

ARM = "qkln-off"
TARGET_LR = 1e-2
# Three ladder sizes at cpu scale: the fit is quadratic.
LADDER = grid.SCALE_SIZES
METRIC_STEP = 2000


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg, "target", "target_lr")
  scale = kv["scale"]
  arm = {ARM: grid.QKLN_ARMS[ARM]}
  target = kv.get("target", grid.SCALE_TARGET_SIZE[scale])
  target_lr = float(kv.get("target_lr", TARGET_LR))
  points = grid.sweep(arm, grid.sizes_arg(kv, LADDER[scale]), grid.SCALE_LRS[scale])
  points += [p for p in grid.sweep(arm, [target], [target_lr])
             if p.name not in {q.name for q in points}]  # unless the ladder has it already
  return grid.Grid(
      experiment="fig9_prediction", scale=scale, figure="Fig 9", points=points,
      sensitivity=grid.single_sensitivity(scale))


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
