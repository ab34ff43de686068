"""Command line: the LR-sensitivity table, the problems and the standard figures of a sweep.

  python -m analysis.report results/fig1_qk_layernorm [--out DIR] [--no-figures]

Figures and `lr_sensitivity.csv` go to DIR (default `<sweep_dir>/analysis`).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Sequence

import pandas as pd

from analysis import results, sensitivity


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("sweep_dir", help="a sweep folder (run folders + sweep.json), local or gs://")
  parser.add_argument("--out", default=None, help="where figures go [<sweep_dir>/analysis]")
  parser.add_argument("--no-figures", action="store_true", help="print the table only")
  return parser.parse_args(argv)


def status_line(runs: pd.DataFrame) -> str:
  """`"14 runs: 10 done, 3 diverged, 1 running"`."""
  counts = runs["status"].value_counts()
  return f"{len(runs)} runs" + "".join(
      f"{', ' if i else ': '}{n} {status}" for i, (status, n) in enumerate(counts.items()))


def _unique(items: Sequence[str]) -> list[str]:
  return list(dict.fromkeys(items))


def report(sweep_dir: str, out_dir: str | None = None, figures: bool = True) -> str:
  """The text report of a sweep; writes the figures and the table CSV unless `figures` is off."""
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")  # every problem is a warning; they are listed below
    runs = results.load_runs(sweep_dir)
    table = sensitivity.sensitivity_table(runs)
    written = []
    if figures:
      out = results.as_path(out_dir or results.as_path(sweep_dir) / "analysis")
      from analysis import figures as figs  # matplotlib only when figures are wanted
      written = figs.make_experiment_figures(sweep_dir, out, runs=runs)
      out.mkdir(parents=True, exist_ok=True)
      csv = out / "lr_sensitivity.csv"
      csv.write_text(table.to_csv(index=False))
      written.append(str(csv))
  spec = runs.attrs.get("sweep") or {}
  lines = [f"sweep {sweep_dir}" + (f" — {spec['experiment']}" if spec.get("experiment") else ""),
           status_line(runs), "", "LR sensitivity", sensitivity.format_table(table)]
  is_problem = [issubclass(w.category, results.ProblemWarning) for w in caught]
  for warning, problem in zip(caught, is_problem):
    if not problem:  # not ours: show it as Python would have
      warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
  problems = _unique([str(w.message) for w, problem in zip(caught, is_problem) if problem])
  lines += ["", f"problems ({len(problems)})"] + [f"  - {p}" for p in problems]
  if written:
    lines += ["", "wrote"] + [f"  {path}" for path in written]
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  """Prints the report; exit code 2 with one line when the folder holds no runs."""
  args = _parse(argv)
  error = results.no_runs_error("analysis.report", args.sweep_dir)
  if error:
    print(error, file=sys.stderr)
    return 2
  print(report(args.sweep_dir, args.out, figures=not args.no_figures))
  return 0


if __name__ == "__main__":
  sys.exit(main())
