"""Fig 8's width part on three seeds: each seed alone, and all three as the claim would read them.

  python docs/measured/fig8-three-seeds-2026-12-07/summarize.py reference/cpu/fig8_mup <more seeds>

Reads the runs of the two arms the part compares (standard and μParam-simple, both with
qk-layernorm) from every folder given, and prints the best LR per width and the best-LR shift
across widths, in half-decades, with the part's rule: μParam's shift at most one step and below
the standard model's.
"""

import sys
import warnings

import pandas as pd

from analysis import claims, results, sensitivity
from analysis import evidence as ev

ARMS = ("standard_qkln-on", "mup-simple_qkln-on")
WIDTHS = ("d64-L2", "d128-L2", "d256-L2")


def read(folders: list[str]) -> pd.DataFrame:
  with warnings.catch_warnings():  # the other arms' points of a partial sweep are not there
    warnings.simplefilter("ignore", results.ProblemWarning)
    runs = pd.concat([results.load_runs(f) for f in folders], ignore_index=True)
  return runs[runs["arm"].isin(ARMS) & (runs["status"] != "unknown")]


def verdict(table: pd.DataFrame) -> str:
  std, mup = (claims._best_lr_shift(ev.arm_rows(table, arm)) for arm in ARMS)
  holds = mup <= 1 and mup < std
  return f"shift standard {std:.2f}, μParam {mup:.2f}: {'holds' if holds else 'does not hold'}"


def main(folders: list[str]) -> None:
  runs = read(folders)
  per_seed = sensitivity.sensitivity_table(runs)
  for seed, table in per_seed.groupby("seed"):
    best = table.pivot(index="arm", columns="size", values="best_lr")[list(WIDTHS)]
    print(f"seed {seed}: best LR\n{best.to_string()}\n  {verdict(table)}")
  table = ev.mean_sensitivity(runs)
  best = table.pivot(index="arm", columns="size", values="best_lr")[list(WIDTHS)]
  print(f"seeds {sorted(int(s) for s in runs['seed'].unique())} (median best LR, as the claim reads seeds)\n"
        f"{best.to_string()}\n  {verdict(table)}")


if __name__ == "__main__":
  main(sys.argv[1:])
