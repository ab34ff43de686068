"""LR sensitivity (docs/paper_notes.md#lr-sensitivity, paper §2.2 and App. B).

For the runs of one model at peak LRs η in a range [a, b], with ℓ(η) the final eval loss:

  ℓ*  = min over η in [a, b] of ℓ(η)         (the best loss of the sweep)
  ℓ0  = the eval loss at initialization
  sensitivity = mean over η in [a, b] of [min(ℓ(η), ℓ0) − ℓ*]

A diverged run (status `diverged`, or a NaN / infinite / missing final loss) counts as ℓ0, and
ℓ* is taken over the clipped losses, so a model that fails at every LR scores 0. ℓ0 is the mean
of the runs' own `init_eval_loss` (they share an initialization, so these agree; a spread above
0.1% is reported). The mean is over the runs present: a missing LR is left out, not imputed.

Rules: `single` uses one range (default [3e-4, 3e-1]); `min_of_ranges` (LR-coupled weight decay,
Fig 6) takes the minimum of the sensitivities over several ranges (default [1e-4, 1e-1] and
[3e-4, 3e-1]).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis import results

DEFAULT_RANGE = (3e-4, 3e-1)
COUPLED_RANGES = ((1e-4, 1e-1), (3e-4, 3e-1))
# LRs within this relative tolerance of a range end count as inside it.
_RANGE_RTOL = 1e-6
_INIT_SPREAD_RTOL = 1e-3


@dataclasses.dataclass(frozen=True)
class Rule:
  """How a group's sensitivity is computed: one range, or the minimum over several."""
  kind: str = "single"
  ranges: tuple[tuple[float, float], ...] = (DEFAULT_RANGE,)

  def __post_init__(self) -> None:
    if self.kind not in ("single", "min_of_ranges"):
      raise ValueError(f"sensitivity rule {self.kind!r}: expected 'single' or 'min_of_ranges'")
    if not self.ranges or (self.kind == "single" and len(self.ranges) != 1):
      raise ValueError(f"sensitivity rule {self.kind!r} needs ranges, got {self.ranges!r}")

  @classmethod
  def from_spec(cls, spec: dict | None) -> Rule | None:
    """A rule from a `sweep.json` `sensitivity` entry; None if the entry is absent."""
    if not spec or "rule" not in spec:
      return None
    kind = spec["rule"]
    default = (DEFAULT_RANGE,) if kind == "single" else COUPLED_RANGES
    ranges = tuple((float(lo), float(hi)) for lo, hi in spec.get("ranges") or default)
    return cls(kind, ranges)


SINGLE = Rule()
MIN_OF_RANGES = Rule("min_of_ranges", COUPLED_RANGES)


@dataclasses.dataclass(frozen=True)
class Sensitivity:
  """The LR sensitivity of one model over one LR range."""
  sensitivity: float
  best_lr: float
  best_loss: float
  init_loss: float
  n_runs: int
  n_diverged: int
  lr_range: tuple[float, float]


def in_range(lrs: np.ndarray, lr_range: tuple[float, float]) -> np.ndarray:
  """Which `lrs` lie in [lo, hi] (ends included, up to a relative 1e-6)."""
  lo, hi = lr_range
  return (lrs >= lo * (1 - _RANGE_RTOL)) & (lrs <= hi * (1 + _RANGE_RTOL))


def clipped_losses(final_losses: np.ndarray, init_loss: float,
                   diverged: np.ndarray) -> np.ndarray:
  """min(ℓ(η), ℓ0), with diverged and non-finite losses set to ℓ0."""
  failed = diverged | ~np.isfinite(final_losses)
  return np.where(failed, init_loss, np.minimum(final_losses, init_loss))


def lr_sensitivity(lrs: Sequence[float], final_losses: Sequence[float], init_loss: float,
                   lr_range: tuple[float, float] = DEFAULT_RANGE,
                   diverged: Sequence[bool] | None = None) -> Sensitivity:
  """The LR sensitivity of one model over the runs whose LR lies in `lr_range`.

  `diverged[i]` marks run i as diverged whatever its final loss. `best_lr` is the LR of ℓ*
  (NaN when no run in range beats ℓ0).
  """
  lrs = np.asarray(lrs, float)
  losses = np.asarray(final_losses, float)
  failed = np.zeros(len(lrs), bool) if diverged is None else np.asarray(diverged, bool)
  failed = failed | ~np.isfinite(losses)
  keep = in_range(lrs, lr_range)
  lrs, losses, failed = lrs[keep], losses[keep], failed[keep]
  if not len(lrs) or not math.isfinite(init_loss):
    return Sensitivity(math.nan, math.nan, math.nan, init_loss, len(lrs), int(failed.sum()),
                       lr_range)
  clipped = clipped_losses(losses, init_loss, failed)
  best = float(clipped.min())
  best_lr = float(lrs[np.argmin(clipped)]) if best < init_loss else math.nan
  return Sensitivity(float(np.mean(clipped - best)), best_lr, best, init_loss, len(lrs),
                     int(failed.sum()), lr_range)


def apply_rule(lrs: Sequence[float], final_losses: Sequence[float], init_loss: float,
               rule: Rule = SINGLE, diverged: Sequence[bool] | None = None) -> Sensitivity:
  """The sensitivity under `rule`: the one range, or the range with the smallest value."""
  candidates = [lr_sensitivity(lrs, final_losses, init_loss, r, diverged) for r in rule.ranges]
  scored = [c for c in candidates if math.isfinite(c.sensitivity)]
  return min(scored, key=lambda c: c.sensitivity) if scored else candidates[-1]


# ---------------------------------------------------------------------------------------------
# Over a runs table


def rule_for(arm: str, group: pd.DataFrame, spec: dict | None, rule: Rule | None) -> Rule:
  """The rule for one (arm, size) group.

  First match wins: the `rule` argument; `sweep.json` `sensitivity.arms[arm]`; the sweep-wide
  `sensitivity` entry; else `min_of_ranges` when the runs use LR-coupled weight decay (Fig 6)
  and `single` otherwise.
  """
  if rule is not None:
    return rule
  spec = spec or {}
  by_arm = Rule.from_spec((spec.get("arms") or {}).get(arm))
  sweep_wide = Rule.from_spec(spec)
  if by_arm or sweep_wide:
    return by_arm or sweep_wide
  mode = group.get("opt.weight_decay_mode")
  if mode is not None and (mode == "coupled").all():
    return MIN_OF_RANGES
  return SINGLE


def shared_init_loss(group: pd.DataFrame, label: str, problems: results.Problems) -> float:
  """ℓ0 of a group: the mean of its runs' finite `init_eval_loss` (reported if they disagree)."""
  values = pd.to_numeric(group["init_eval_loss"], errors="coerce")
  values = values[np.isfinite(values)]
  if values.empty:
    problems.add(f"{label}: no run has an init_eval_loss; LR sensitivity is undefined")
    return math.nan
  mean = float(values.mean())
  if values.max() - values.min() > _INIT_SPREAD_RTOL * abs(mean):
    problems.add(f"{label}: init_eval_loss differs across LRs "
                 f"({values.min():.4f}..{values.max():.4f}); using the mean {mean:.4f}")
  return mean


def usable_runs(runs: pd.DataFrame, problems: results.Problems) -> pd.DataFrame:
  """Runs with a final status (done / diverged) and an LR; the rest are reported and dropped."""
  unfinished = ~runs["status"].isin(results.FINISHED)
  for _, row in runs[unfinished].iterrows():
    problems.add(f"run {row['name']}: status {row['status']}; left out of LR sensitivity")
  no_lr = ~unfinished & runs["lr"].isna()
  for _, row in runs[no_lr].iterrows():
    problems.add(f"run {row['name']}: no learning rate; left out of LR sensitivity")
  return runs[~unfinished & ~no_lr]


def _warn_if_lr_rescaled(group: pd.DataFrame, label: str, problems: results.Problems) -> None:
  if "opt.lr_scale" in group and (group["opt.lr_scale"] == "param_rms").any():
    problems.add(f"{label}: LR is scaled by parameter RMS; LR sensitivity is not comparable "
                 "(paper App. B)")


def group_sensitivity(group: pd.DataFrame, rule: Rule, label: str,
                      problems: results.Problems) -> dict[str, Any]:
  """One row of the sensitivity table from the usable runs of one (arm, size)."""
  _warn_if_lr_rescaled(group, label, problems)
  init_loss = shared_init_loss(group, label, problems)
  result = apply_rule(group["lr"].to_numpy(float), group["final_eval_loss"].to_numpy(float),
                      init_loss, rule, (group["status"] == "diverged").to_numpy())
  first = group.iloc[0]
  return {
      "arm": first["arm"], "size": first["size"], "num_params": first["num_params"],
      "d_model": first.get("d_model"), "num_layers": first.get("num_layers"),
      "sensitivity": result.sensitivity, "best_lr": result.best_lr,
      "best_loss": result.best_loss, "init_loss": result.init_loss,
      "n_runs": result.n_runs, "n_diverged": result.n_diverged,
      "lr_range": f"{result.lr_range[0]:.0e}..{result.lr_range[1]:.0e}", "rule": rule.kind,
  }


TABLE_COLUMNS = ("arm", "size", "seed", "num_params", "d_model", "num_layers", "sensitivity", "best_lr",
                 "best_loss", "init_loss", "n_runs", "n_diverged", "lr_range", "rule")


def sensitivity_table(runs: pd.DataFrame, rule: Rule | None = None) -> pd.DataFrame:
  """LR sensitivity per (arm, size) of a runs table from `results.load_runs`.

  One row per (arm, size, seed): replicates (`train.seed`) are scored separately.
  Columns: arm, size, seed, num_params, d_model, num_layers, sensitivity, best_lr, best_loss,
  init_loss (ℓ0), n_runs, n_diverged (in the range used), lr_range, rule; sorted by arm then
  size. Runs that are not done/diverged are left out with a warning (failed is not diverged).
  `attrs["problems"]` lists those notes.
  """
  problems = results.Problems()
  spec = (runs.attrs.get("sweep") or {}).get("sensitivity")
  rows = []
  usable = usable_runs(runs, problems)
  if "seed" not in usable.columns:
    usable = usable.assign(seed=0)
  groups = usable.groupby(["arm", "size", "seed"], sort=False, dropna=False)
  for (arm, size, seed), group in groups:
    label = f"{arm} {size}" + (f" seed {seed}" if seed else "")
    row = group_sensitivity(group, rule_for(arm, group, spec, rule), label, problems)
    rows.append({**row, "seed": seed})
  table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
  table = table.sort_values(["arm", "num_params", "seed"]).reset_index(drop=True)
  table.attrs["problems"] = problems.items
  table.attrs["sweep"] = runs.attrs.get("sweep") or {}
  return table


def format_table(table: pd.DataFrame) -> str:
  """The sensitivity table as aligned plain text."""
  if table.empty:
    return "(no finished runs)"
  shown = table.drop(columns=["d_model", "num_layers"], errors="ignore").copy()
  formats = {"num_params": "{:.3g}", "sensitivity": "{:.4f}", "best_lr": "{:.0e}",
             "best_loss": "{:.4f}", "init_loss": "{:.4f}"}
  for column, fmt in formats.items():
    shown[column] = [fmt.format(v) if pd.notna(v) else "-" for v in shown[column]]
  return shown.to_string(index=False)
