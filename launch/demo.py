"""`make demo`: the paper's headline on a laptop, in minutes.

Trains 0.1M- and 0.4M-parameter decoders on the embedded corpus at 7 learning rates, with and
without qk-layernorm (the `cpu` scale of configs/fig1_qk_layernorm.py, its two smaller sizes, one
seed), then prints the LR sensitivity of each arm, their ratio per size, and the max attention
logit at high LR, and draws the figures. Re-running reuses finished runs. `make reproduce`
trains the whole ladder with two seeds (docs/reproduction.md).

  python -m launch.demo [--out=results/demo] [--sizes=d64-L2+d128-L2] [--batch=auto|on|off]

(`--out` and `--batch` are launch.sweep's flags.)
"""

import math
import os
import time

from absl import app
from absl import flags

from analysis import figures, results, sensitivity
from configs import fig1_qk_layernorm
from launch import sweep
from stability import runtime

_SIZES = flags.DEFINE_string("sizes", "d64-L2+d128-L2", "model sizes, joined by '+'")


def max_logit_table(runs, metric: str = "attn_logit_max/block_0") -> str:
  """Per arm: the max attention logit of block 0 over training, at each LR from 1e-2 up, for the
  largest size."""
  runs = runs[runs["num_params"] == runs["num_params"].max()]
  lines = [f"max attention logit of block 0 over training ({metric}), {runs['size'].iloc[0]}:",
           f"  {'lr':>8s}" + "".join(f"{arm:>14s}" for arm in sorted(runs.arm.unique()))]
  for lr in sorted(runs.lr.unique()):
    if lr < 1e-2:
      continue
    cells = []
    for arm in sorted(runs.arm.unique()):
      row = runs[(runs.arm == arm) & (runs.lr == lr)]
      value = float("nan")
      if len(row):
        m = results.load_metrics(row.iloc[0].run_dir, columns=["step", metric])
        if metric in m and len(m):
          value = float(m[metric].max())
      cells.append(f"{value:14.3g}" if math.isfinite(value) else f"{'nan':>14s}")
    lines.append(f"  {lr:8.0e}" + "".join(cells))
  return "\n".join(lines)


def ratio_lines(table) -> str:
  """Per size: LR sensitivity with qk-layernorm over that without (the headline in a number)."""
  wide = table.pivot_table(index="size", columns="arm", values="sensitivity")
  if not {"qkln-on", "qkln-off"} <= set(wide.columns):
    return "(both arms are needed for the ratio)"
  order = table.groupby("size")["num_params"].first().sort_values().index
  lines = ["LR sensitivity with qk-layernorm / without (lower: qk-layernorm helps more):"]
  for size in order:
    on, off = wide.loc[size, "qkln-on"], wide.loc[size, "qkln-off"]
    lines.append(f"  {size:10s} {on:.3f} / {off:.3f} = {on / off:.2f}")
  return "\n".join(lines)


def main(argv):
  del argv
  runtime.enable_compilation_cache()
  start = time.time()
  out = sweep._OUT.value or "results/demo"
  grid = fig1_qk_layernorm.get_grid(f"scale=cpu,sizes={_SIZES.value},seeds=0")
  print(f"[demo] {len(grid.points)} runs of {grid.experiment} into {out} "
        "(finished runs are reused)", flush=True)
  sweep.run_grid(grid, out, batch=sweep.should_batch(sweep._BATCH.value, grid))

  runs = results.load_runs(out)
  table = sensitivity.sensitivity_table(runs)
  out_dir = os.path.join(out, "analysis")
  written = figures.make_experiment_figures(out, out_dir, runs=runs)
  headline = figures.qk_layernorm_headline(runs, save_to=os.path.join(out_dir, "demo"))
  del headline
  print("\nLR sensitivity (docs/paper_notes.md#lr-sensitivity; lower is more stable):")
  print(sensitivity.format_table(table))
  print()
  print(ratio_lines(table))
  print()
  print(max_logit_table(runs))
  print(f"\nfigures: {os.path.join(out_dir, 'demo.png')} and {len(written)} more in {out_dir}")
  print(f"[demo] done in {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
  app.run(main)
