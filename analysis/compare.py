"""Two sweeps of one grid made differently (another machine, thread count, backend or JAX
version): how far apart their final losses and LR sensitivities are, next to the seed-to-seed
spread of the first.

  python -m analysis.compare reference/cpu/fig1_qk_layernorm results/other/fig1_qk_layernorm \
      [--figure=out/two_sweeps]    # also both sweeps' final loss vs LR in one figure
"""

from __future__ import annotations

import argparse
import collections
import sys
from typing import Sequence

import pandas as pd

from analysis import evidence as ev
from analysis import results

POINT = ["arm", "size", "lr", "seed"]


def finished(sweep_dir: str) -> pd.DataFrame:
  runs = results.load_runs(sweep_dir)
  return runs[runs["status"].isin(results.FINISHED)]


def point_gaps(a_runs: pd.DataFrame, b_runs: pd.DataFrame) -> pd.DataFrame:
  """Per point finished in both: final losses (ℓ0 where diverged or above, as in the LR
  sensitivity), `gap` = b − a, and each status."""
  def table(runs):
    losses = ev.clipped_losses(runs).set_index(POINT)["loss"]
    return pd.DataFrame({"loss": losses, "status": runs.set_index(POINT)["status"]})
  both = table(a_runs).merge(table(b_runs), left_index=True, right_index=True,
                             suffixes=("_a", "_b"))
  return both.assign(gap=both["loss_b"] - both["loss_a"])


def seed_gaps(runs: pd.DataFrame) -> pd.Series:
  """Per (arm, size, lr) every seed trained at: the range of its final losses over seeds
  (empty with one seed)."""
  losses = ev.clipped_losses(runs).pivot_table(index=POINT[:3], columns="seed", values="loss")
  losses = losses.dropna()
  if losses.shape[1] < 2:
    return pd.Series(dtype=float)
  return losses.max(axis=1) - losses.min(axis=1)


def sensitivity_pairs(a_runs: pd.DataFrame, b_runs: pd.DataFrame) -> pd.DataFrame:
  """Per (arm, size): mean LR sensitivity over seeds in a and in b, and b − a."""
  a = ev.mean_sensitivity(a_runs).set_index(["arm", "size"])["sensitivity"]
  b = ev.mean_sensitivity(b_runs).set_index(["arm", "size"])["sensitivity"]
  pairs = pd.DataFrame({"a": a, "b": b}).dropna()
  return pairs.assign(change=pairs["b"] - pairs["a"])


def software(runs: pd.DataFrame) -> list[str]:
  """One line per distinct software and corpus the runs' last sessions had, with its count."""
  def known(value):
    return None if pd.isna(value) else value
  kinds = collections.Counter(
      tuple(known(v) for v in row)
      for row in runs[list(results.PROVENANCE_COLUMNS)].itertuples(index=False))
  lines = []
  for (code, python, jax, flags, options, corpus), count in kinds.most_common():
    runs_n = f"({count} run{'' if count == 1 else 's'})"
    if python is None:
      lines.append(f"not recorded {runs_n}")
      continue
    corpus = f"corpus {corpus[:12]}" if corpus else "no embedded corpus"
    code = "unknown" if not code else code[:12] + ("-dirty" if code.endswith("-dirty") else "")
    lines.append(f"code {code}, python {python}, jax {jax}, XLA_FLAGS '{flags}', compiler "
                 f"options {options or 'unrecorded'}, {corpus} {runs_n}")
  changed = int(sum(known(v) is True for v in runs["software_changed"]))
  if changed:
    lines.append(f"resumed under other software or data: {changed} (their summaries' provenance)")
  return lines


def _quantiles(gaps: pd.Series) -> str:
  gaps = gaps.abs()
  return (f"median {gaps.median():.4f}, 90th percentile {gaps.quantile(0.9):.4f}, "
          f"largest {gaps.max():.4f} over {len(gaps)}")


def report(a_dir: str, b_dir: str) -> str:
  a_runs, b_runs = finished(a_dir), finished(b_dir)
  gaps = point_gaps(a_runs, b_runs)
  lines = [f"a: {a_dir}", f"b: {b_dir}", ""]
  for label, runs in (("a", a_runs), ("b", b_runs)):
    lines += [f"software in {label}: {line}" for line in software(runs)]
  lines += ["", f"|final loss b − a| per point: {_quantiles(gaps['gap'])} points"]
  compared = gaps.index.droplevel("seed").unique()
  seeds = seed_gaps(a_runs)
  seeds = seeds[seeds.index.isin(compared)]
  if len(seeds):
    lines.append(f"seed-to-seed range in a:     {_quantiles(seeds)} (arm, size, LR)")
  flipped = gaps[gaps["status_a"] != gaps["status_b"]]
  lines.append(f"status differs at {len(flipped)} points"
               + (":\n" + flipped.round(4).to_string() if len(flipped) else ""))
  lines += ["", "mean LR sensitivity per arm and size:",
            sensitivity_pairs(a_runs, b_runs).round(4).to_string(), "",
            "largest gaps:", gaps.reindex(gaps["gap"].abs().sort_values(ascending=False).index)
            .head(8).round(4).to_string()]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analysis.compare", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("a", help="a sweep folder (the reference)")
  parser.add_argument("b", help="the same grid's sweep folder, made another way")
  parser.add_argument("--figure", default="",
                      help="also draw both sweeps' final loss vs LR to <figure>.png and .svg")
  args = parser.parse_args(argv)
  for folder in (args.a, args.b):
    if error := results.no_runs_error("analysis.compare", folder):
      print(error, file=sys.stderr)
      return 2
  print(report(args.a, args.b))
  if args.figure:
    from analysis import figures
    written = figures.save(figures.two_sweeps_loss_vs_lr(
        results.load_runs(args.a), results.load_runs(args.b), labels=("A", "B"),
        title=f"Final eval loss vs learning rate: A = {args.a}, B = {args.b}"),
        args.figure)
    print("figure: " + ", ".join(written))
  return 0


if __name__ == "__main__":
  sys.exit(main())
