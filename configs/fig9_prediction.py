"""Fig 9: predicting attention-logit-growth divergence of a larger model from small ones.

One arm, `qkln-off` (qk-layernorm off, everything else default), over a ladder of sizes × the
scale's LR grid, plus a target a size beyond the ladder (paper §3.3). The metric is the max
attention logit of block 0 at an early training step; for each LR a quadratic in log10(N) is fitted
to log10(max logit) over the ladder and extrapolated to the target (analysis/prediction.py).

  paper  ladder: the Fig 1 ladder (d512-L3 .. d2048-L24); target d4096-L24 (4.8B) at LR 1e-2,
         the run the paper predicted to diverge; metric at step 2000; threshold 1e4 (every run
         above it diverged in the paper).
  gpu    ladder: the gpu ladder; target d768-L12 at 1e-2; step 2000; threshold 1e4.
  cpu    ladder: d64-L1 and the Fig 1 ladder (four sizes, so that the quadratic is a fit, not
         an interpolation); target d192-L4 (1.8M) at every LR of the grid, so that the
         prediction is checked at each LR instead of at one picked after the fit. Metric at
         step 30, the end of the warm-up: before it the logits have barely moved, after it the
         runs that fail have already grown. Threshold: the paper's 1e4 says "above this, every
         run failed"; at cpu scale no run reaches 1e4 that early, so analysis/claims.py takes
         the same rule from the ladder itself: the smallest logit above which every ladder run
         failed (diverged, or lost a fifth of the way from its best loss back to ℓ0).
         Between 1e-2 and 1e-1, where the ladder's sizes start to fail one after another, the
         grid is denser (CPU_EXTRA_LRS, ladder and target): on the half-decade grid alone the
         forecast and the naive rule "the target fails where the largest ladder size failed"
         agreed at every LR, so the test could not tell them apart.
The ladder points are the same runs as fig1's `qkln-off` arm (seed 0): `make reproduce` copies
them in; by hand, `cp -r results/fig1/*_qkln-off results/fig9/` and they are skipped.
Overrides: `sizes=a+b` (the ladder), `target=<size>`, `target_lr=<lr>` (one LR instead of the
cpu default of all).

  python -m launch.sweep --experiment=configs/fig9_prediction.py:scale=cpu --out=results/fig9
  python -m analysis.report results/fig9
"""

from configs import grid

ARM = "qkln-off"
LADDER = {"cpu": ("d64-L1",) + grid.SCALE_SIZES["cpu"], "gpu": grid.SCALE_SIZES["gpu"],
          "paper": grid.SCALE_SIZES["paper"]}
# LRs between the half-decades where the cpu ladder's sizes start to fail (docstring).
CPU_EXTRA_LRS = (0.02, 0.04, 0.06)
LADDER_LRS = {"cpu": tuple(sorted(grid.SCALE_LRS["cpu"] + CPU_EXTRA_LRS)),
              "gpu": grid.SCALE_LRS["gpu"], "paper": grid.SCALE_LRS["paper"]}
TARGET_LRS = {"cpu": LADDER_LRS["cpu"], "gpu": (1e-2,), "paper": (1e-2,)}
METRIC_STEP = {"cpu": 30, "gpu": 2000, "paper": 2000}
THRESHOLD = {"cpu": "ladder", "gpu": 1e4, "paper": 1e4}


def get_grid(arg: str | None = None) -> grid.Grid:
  kv = grid.parse_grid_arg(arg, "target", "target_lr")
  scale = kv["scale"]
  arm = {ARM: grid.QKLN_ARMS[ARM]}
  target = kv.get("target", grid.SCALE_TARGET_SIZE[scale])
  target_lrs = (float(kv["target_lr"]),) if "target_lr" in kv else TARGET_LRS[scale]
  points = grid.sweep(arm, grid.sizes_arg(kv, LADDER[scale]), LADDER_LRS[scale])
  points += [p for p in grid.sweep(arm, [target], target_lrs)
             if p.name not in {q.name for q in points}]  # unless the ladder has it already
  return grid.Grid(
      experiment="fig9_prediction", scale=scale, figure="Fig 9", points=points,
      sensitivity=grid.single_sensitivity(scale),
      analysis={"target": {"size": target, "lrs": list(target_lrs)},
                "metric_step": METRIC_STEP[scale], "threshold": THRESHOLD[scale]})


def get_config(arg: str | None = None):
  return grid.experiment_config(get_grid, arg)
