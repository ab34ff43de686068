"""`make demo`: the paper's headline on a laptop, in minutes.

Trains a 0.1M-parameter decoder on the embedded corpus at 7 learning rates, with and without
qk-layernorm, from two seeds (the `cpu` scale of configs/fig1_qk_layernorm.py at its smallest
size), then prints the LR sensitivity of each arm, their ratio per seed and over both, whether
the gap holds beyond the spread between seeds (judged as docs/reproduction.md judges claim 1,
beside the reference runs' verdict), the max attention logit at high LR, and the same ratios in
the committed reference runs of the whole ladder, and draws the figures. Re-running reuses
finished runs.

Why two seeds of one size: one seed's LR sensitivity moves by about 0.07 from seed to seed (the
reference's spread), as much as the margin the headline is judged by; two seeds of the two
smaller sizes take 17 minutes here, two of the smallest 7. `make reproduce` trains the whole
ladder (docs/reproduction.md).

  python -m launch.demo [--out=results/demo] [--sizes=d64-L2] [--seeds=0+1]
                        [--reference=reference/cpu/fig1_qk_layernorm] [--batch=auto|on|off]

(`--out`, `--batch` and `--workers` are launch.sweep's flags; `--workers` is `auto` here: one
runner per core, each run on one core, as the reference runs were made.)
"""

import math
import os
import time

from absl import app
from absl import flags

from analysis import claims, evidence, figures, results, sensitivity
from configs import fig1_qk_layernorm
from launch import reference as reference_lib
from launch import sweep
from stability import runtime

_SIZES = flags.DEFINE_string("sizes", "d64-L2", "model sizes, joined by '+'")
_SEEDS = flags.DEFINE_string("seeds", "0+1", "seeds, joined by '+'")
_REFERENCE = flags.DEFINE_string(
    "reference", "reference/cpu/fig1_qk_layernorm",
    "committed runs of the same experiment to compare with ('' for none)")


def max_logit_table(runs, metric: str = "attn_logit_max/block_0") -> str:
  """Per arm: the max attention logit of block 0 over training, at each LR from 1e-2 up, for the
  largest size and the first seed."""
  runs = runs[runs["num_params"] == runs["num_params"].max()]
  runs = runs[runs["seed"] == runs["seed"].min()]
  lines = [f"max attention logit of block 0 over training ({metric}), {runs['size'].iloc[0]}, "
           f"seed {runs['seed'].iloc[0]}:",
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


def ratio_rows(table) -> list[str]:
  """Per size: LR sensitivity with qk-layernorm over that without, per seed and, over the seeds
  where both arms have one, their means."""
  sens = {(r.size, r.seed, r.arm): r.sensitivity for r in table.itertuples()
          if math.isfinite(r.sensitivity)}
  rows = []
  for size in table.groupby("size")["num_params"].first().sort_values().index:
    seeds = sorted(seed for (s, seed, arm) in sens if s == size and arm == "qkln-on"
                   and (size, seed, "qkln-off") in sens)
    pairs = [(sens[size, seed, "qkln-on"], sens[size, seed, "qkln-off"]) for seed in seeds]
    cells = [f"seed {seed:g}: {on:.3f} / {off:.3f} = {on / off:.2f}"
             for seed, (on, off) in zip(seeds, pairs)]
    if len(pairs) > 1:
      on, off = (sum(p[i] for p in pairs) / len(pairs) for i in (0, 1))
      cells.append(f"mean of {len(pairs)} seeds: {on:.3f} / {off:.3f} = {on / off:.2f}")
    rows.append(f"  {size:10s} " + ("; ".join(cells) or "(no seed has both arms)"))
  return rows


def ratio_lines(table) -> str:
  """The headline in a number, per size."""
  return "\n".join(["LR sensitivity with qk-layernorm / without (lower: qk-layernorm helps more):",
                    *ratio_rows(table)])


def verdict_rows(runs, spread: float) -> dict[str, tuple[bool, str]]:
  """Per size: claim 1's first part as docs/reproduction.md judges it, and its numbers."""
  gaps = claims.headline_gaps(runs)
  holds = claims.higher_without_qkln(gaps, spread)
  return {size: (bool(holds[size]),
                 f"gap {r.gap:.3f} (without − with, mean of the seeds), seed range "
                 f"{r.seed_range:.3f}, spread {spread:.3f}: "
                 + ("holds beyond them" if holds[size] else "not beyond them"))
          for size, r in gaps.iterrows()}


def verdict_lines(runs, reference_dir: str) -> str:
  """The headline with its uncertainty, and its verdict beside the reference runs' at the same
  sizes: rounding changes digits, so the two are compared by verdict."""
  reference = results.load_runs(reference_dir) if os.path.isdir(reference_dir) else None
  spread = evidence.Spread.of(reference).sensitivity if reference is not None else (
      evidence.MIN_SENS_SPREAD)
  ours = verdict_rows(runs, spread)
  lines = ["is sensitivity higher without qk-layernorm, beyond the spread between seeds? "
           f"(claim 1; spread: the reference's largest seed range, {spread:.3f})"]
  theirs = {}
  if reference is not None:
    sizes = set(runs["size"])
    theirs = verdict_rows(reference[reference["size"].isin(sizes)], spread)
  for size, (holds, text) in ours.items():
    lines.append(f"  {size:10s} this run: {text}")
    if size in theirs:
      their_holds, their_text = theirs[size]
      lines.append(f"  {'':10s} reference: {their_text} "
                   f"({'same verdict' if their_holds == holds else 'VERDICT DIFFERS'})")
  return "\n".join(lines)


def reference_lines(runs, reference_dir: str) -> str:
  """The ratios of the committed reference runs, and how this machine's runs compare with the
  reference runs of the same points (equal final losses: the same numerics)."""
  reference = results.load_runs(reference_dir)
  lines = [f"the reference runs ({reference_dir}, `make reproduce`), every size and seed:",
           *ratio_rows(sensitivity.sensitivity_table(reference))]
  ours = runs.set_index("name")["final_eval_loss"]
  theirs = reference.set_index("name")["final_eval_loss"].reindex(ours.index)
  both = ours.notna() & theirs.notna()
  if both.any():
    equal = int((ours[both] == theirs[both]).sum())
    gap = float((ours[both] - theirs[both]).abs().max())
    lines.append(f"this demo's final eval losses equal the reference's in {equal} of "
                 f"{int(both.sum())} runs (largest difference {gap:.2g}; other machines and "
                 "thread counts round differently)")
  for note in (reference_lib.numerics_note(reference_dir), reference_lib.corpus_note(reference_dir)):
    if note:
      lines.append(f"note: {note}")
  return "\n".join(lines)


def train(grid, experiment: str, out: str) -> None:
  """The demo's runs: on a CPU one runner per core, each run on one core as the reference runs
  were made (unless `--workers` says otherwise); else in this process."""
  requested = sweep._WORKERS.value if flags.FLAGS["workers"].present else "auto"
  count = sweep.runner_count(requested, sweep._BATCH.value)
  if count == 1:
    sweep.run_grid(grid, out, batch=sweep.should_batch(sweep._BATCH.value, grid))
  else:
    sweep.run_workers(experiment, out, count)


def main(argv):
  del argv
  runtime.prepare_training_process()
  start = time.time()
  out = sweep._OUT.value or "results/demo"
  arg = f"scale=cpu,sizes={_SIZES.value},seeds={_SEEDS.value}"
  grid = fig1_qk_layernorm.get_grid(arg)
  print(f"[demo] {len(grid.points)} runs of {grid.experiment} into {out} "
        "(finished runs are reused)", flush=True)
  train(grid, f"configs/fig1_qk_layernorm.py:{arg}", out)

  runs = results.load_runs(out)
  runs = runs[runs["name"].isin({p.name for p in grid.points})]  # not other runs left in `out`
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
  print(verdict_lines(runs, _REFERENCE.value))
  print()
  print(max_logit_table(runs))
  if _REFERENCE.value and os.path.isdir(_REFERENCE.value):
    print()
    print(reference_lines(runs, _REFERENCE.value))
  print(f"\nfigures: {os.path.join(out_dir, 'demo.png')} and {len(written)} more in {out_dir}")
  print(f"[demo] done in {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
  app.run(main)
