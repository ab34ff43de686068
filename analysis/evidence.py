"""What the claims of analysis/claims.py read from sweeps: verdicts, spreads, loss curves, growth.

A check returns a `Finding`: what it measured and a verdict, one of

  reproduced                  the direction the paper states holds, beyond the seed-to-seed spread
  not reproduced              it does not
  not testable at this scale  the runs cannot show it; the reason says why
  not run                     a sweep it needs has no finished runs

A claim is judged part by part (`Finding.parts`), and the claim takes the verdict of its worst
part (`combine`). A part that is not reproduced is either a *contrary finding* (the runs meet what
the paper's mechanism needs, and the effect did not appear) or *beyond this scale* (they do not,
and `Finding.causes` says with which numbers). docs/paper_notes.md#criteria gives each rule.

The seed-to-seed spread comes from the replicated headline sweep (fig1): the largest range of LR
sensitivity across the seeds of one (arm, size), and the median gap between two seeds' final
losses at one grid point. Sweeps with one seed are judged against that spread.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import numpy as np
import pandas as pd

from analysis import results, sensitivity

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
NOT_TESTABLE = "not testable at this scale"
NOT_RUN = "not run"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, NOT_TESTABLE, NOT_RUN)
# The two kinds of "not reproduced".
CONTRARY = "contrary finding"
BEYOND_SCALE = "beyond this scale"

HEADLINE = "fig1_qk_layernorm"
LOGIT = "attn_logit_max/block_0"
# "Grows by orders of magnitude": at least two, from the first logged step to its peak.
ORDERS_OF_MAGNITUDE = 100.0
# A run "fails" at an LR once its loss is this far from its arm's best back towards ℓ0.
FAILED_FRACTION = 0.2
# Floors of the spreads, for sweeps whose seeds happen to agree to the last digit.
MIN_SENS_SPREAD = 0.01
MIN_LOSS_SPREAD = 0.01


@dataclasses.dataclass
class Finding:
  verdict: str
  ours: str                      # one line: what we measured
  reason: str = ""               # why the verdict, in a sentence or two
  numbers: dict = dataclasses.field(default_factory=dict)  # "parts": {part: verdict}, if any
  causes: dict = dataclasses.field(default_factory=dict)   # part: why it is beyond this
  #                                                          scale, or not testable

  @property
  def parts(self) -> dict[str, str]:
    """{part: verdict}; a claim judged whole is its own single part."""
    return dict(self.numbers.get("parts") or {"the claim as a whole": self.verdict})

  def kind(self, part: str) -> str:
    """CONTRARY or BEYOND_SCALE for a part that is not reproduced, else ''."""
    if self.parts.get(part) != NOT_REPRODUCED:
      return ""  # (a not-testable part may have a cause too: why the design cannot resolve it)
    return BEYOND_SCALE if part in self.causes else CONTRARY

  @property
  def claim_kind(self) -> str:
    """A claim not reproduced is contrary if any failed part is, else beyond this scale."""
    kinds = {self.kind(p) for p in self.parts} - {""}
    return CONTRARY if CONTRARY in kinds else BEYOND_SCALE if kinds else ""


def parts_finding(parts: dict[str, str], ours: str, reason: str = "",
                  numbers: dict | None = None, beyond: dict | None = None,
                  untestable: dict | None = None) -> Finding:
  """A Finding judged part by part: its verdict combines the parts'. `beyond` says why a part
  is beyond this scale, kept where that part is not reproduced (the rest are contrary);
  `untestable` says why a part cannot be tested, kept where it is not testable."""
  causes = {p: why for p, why in (beyond or {}).items() if parts.get(p) == NOT_REPRODUCED}
  causes.update({p: why for p, why in (untestable or {}).items()
                 if parts.get(p) == NOT_TESTABLE})
  return Finding(combine(parts), ours, reason, {**(numbers or {}), "parts": dict(parts)}, causes)


# ---------------------------------------------------------------------------------------------
# Reading sweeps


class Sweeps:
  """The run tables of the sweeps under `root` (`<root>/<experiment>/`), loaded once each."""

  def __init__(self, root: results.PathLike, tables: dict[str, pd.DataFrame] | None = None):
    self.root = results.as_path(root) if root is not None else None
    self._tables = dict(tables or {})

  def runs(self, experiment: str) -> pd.DataFrame | None:
    """The runs of one sweep, if every point its sweep.json lists has finished; else None (a
    claim is not judged on part of a sweep: a missing arm or LR would change its numbers)."""
    if experiment not in self._tables:
      path = self.root / experiment if self.root is not None else None
      self._tables[experiment] = (results.load_runs(path) if path is not None and path.exists()
                                  else None)
    runs = self._tables[experiment]
    if runs is None or runs.empty:
      return None
    finished = runs[runs["status"].isin(results.FINISHED)]
    listed = {p["name"] for p in (runs.attrs.get("sweep") or {}).get("points", [])}
    if not len(finished) or not listed <= set(finished["name"]):
      return None
    return finished[finished["name"].isin(listed)] if listed else finished

  @functools.cached_property
  def spread(self) -> "Spread":
    return Spread.of(self.runs(HEADLINE))


@dataclasses.dataclass(frozen=True)
class Spread:
  """Seed-to-seed spread of the headline sweep (floors when it has one seed or none): the
  largest range of LR sensitivity across seeds of one (arm, size), and the 90th percentile of
  the gap between two seeds' final losses at one grid point (both diverged: left out)."""
  sensitivity: float
  loss: float
  seeds: int

  @classmethod
  def of(cls, runs: pd.DataFrame | None) -> "Spread":
    if runs is None or runs["seed"].nunique() < 2:
      return cls(MIN_SENS_SPREAD, MIN_LOSS_SPREAD, 0 if runs is None else 1)
    table = sensitivity.sensitivity_table(runs)
    ranges = table.groupby(["arm", "size"])["sensitivity"].agg(lambda s: s.max() - s.min())
    finite = runs[(runs["status"] == "done") & np.isfinite(runs["final_eval_loss"])]
    losses = clipped_losses(finite).pivot_table(index=["arm", "size", "lr"], columns="seed",
                                                values="loss")
    losses = losses.dropna()  # points where every seed trained
    gaps = losses.max(axis=1) - losses.min(axis=1)
    return cls(max(float(ranges.max()), MIN_SENS_SPREAD),
               max(float(gaps.quantile(0.9)) if len(gaps) else 0.0, MIN_LOSS_SPREAD),
               int(runs["seed"].nunique()))


def mean_sensitivity(runs: pd.DataFrame, rule: sensitivity.Rule | None = None) -> pd.DataFrame:
  """Per (arm, size): mean LR sensitivity over seeds, its range, num_params and the best LR
  (over the sweep's LR range, or `rule`'s)."""
  table = sensitivity.sensitivity_table(runs, rule)
  return table.groupby(["arm", "size"], as_index=False).agg(
      num_params=("num_params", "first"), sensitivity=("sensitivity", "mean"),
      seed_range=("sensitivity", lambda s: s.max() - s.min()), seeds=("seed", "nunique"),
      best_lr=("best_lr", "median"), best_loss=("best_loss", "mean"),
      init_loss=("init_loss", "mean")).sort_values(["arm", "num_params"])


def point_seed_range(runs: pd.DataFrame | None, arm: str, size: str, lr: float) -> float:
  """The range of clipped final losses across the seeds of one grid point (NaN with < 2)."""
  if runs is None:
    return math.nan
  table = clipped_losses(runs)
  at = table[(table["arm"] == arm) & (table["size"] == size) & np.isclose(table["lr"], lr)]
  return float(np.ptp(at["loss"])) if at["seed"].nunique() >= 2 else math.nan


def local_tolerance(spread: Spread, seed_range: float) -> float:
  """The loss tolerance where a claim is judged at one point: the headline's spread, or the
  point's own seed range where that is larger."""
  return max(spread.loss, seed_range) if math.isfinite(seed_range) else spread.loss


def first_and_final(run_dir: str, metric: str) -> tuple[float, float]:
  """The metric at step 0 (its first finite value) and at the last step where it is finite."""
  m = metric_frame(run_dir, metric)
  if metric not in m:
    return math.nan, math.nan
  finite = m[metric][np.isfinite(m[metric].astype(float))]
  return (float(finite.iloc[0]), float(finite.iloc[-1])) if len(finite) else (math.nan, math.nan)


def clipped_losses(runs: pd.DataFrame) -> pd.DataFrame:
  """arm, size, num_params, lr, seed and `loss`: the final eval loss, ℓ0 if diverged or above."""
  init = runs["init_eval_loss"].to_numpy(float)
  loss = runs["final_eval_loss"].to_numpy(float)
  failed = (runs["status"] == "diverged").to_numpy() | ~np.isfinite(loss)
  clipped = np.where(failed, init, np.minimum(loss, init))
  return runs[["arm", "size", "num_params", "lr", "seed"]].assign(loss=clipped, init=init)


def loss_curve(runs: pd.DataFrame, arm: str, size: str) -> pd.Series:
  """Clipped final loss vs LR for one arm and size, the mean over seeds."""
  table = clipped_losses(runs)
  rows = table[(table["arm"] == arm) & (table["size"] == size)]
  return rows.groupby("lr")["loss"].mean().sort_index()


def critical_lr(curve: pd.Series, init_loss: float) -> float:
  """The LR above the best one at which the loss has come FAILED_FRACTION of the way back from
  its best to ℓ0: interpolated in log LR between the last grid LR below that level and the
  first at or above it. inf when no LR of the grid gets there.
  """
  curve = curve.sort_index()
  best = curve.min()
  level = best + FAILED_FRACTION * (init_loss - best)
  above_best = curve[curve.index >= curve.idxmin()]
  failed = above_best[above_best >= level]
  if failed.empty:
    return math.inf
  lr_fail = failed.index.min()
  before = above_best[above_best.index < lr_fail]
  if before.empty:  # the best LR is itself at the level: every LR of the grid failed
    return float(lr_fail)
  lr_ok, loss_ok = before.index.max(), before.iloc[-1]
  t = (level - loss_ok) / (curve[lr_fail] - loss_ok)
  return float(10 ** (math.log10(lr_ok) + t * (math.log10(lr_fail) - math.log10(lr_ok))))


def sizes_by_params(runs: pd.DataFrame) -> list[str]:
  return list(runs.groupby("size")["num_params"].first().sort_values().index)


def arm_rows(table: pd.DataFrame, arm: str) -> pd.DataFrame:
  return table[table["arm"] == arm].sort_values("num_params")


def metric_frame(run_dir: str, *metrics: str) -> pd.DataFrame:
  return results.load_metrics(run_dir, columns=["step", *metrics])


def peak_growth(run_dir: str, metric: str = LOGIT) -> tuple[float, float, int | None]:
  """(peak / first finite value, peak, step of the peak) of a metric over training."""
  m = metric_frame(run_dir, metric)
  if metric not in m or m.empty:
    return math.nan, math.nan, None
  values = m[metric].astype(float)
  finite = values[np.isfinite(values)]
  if finite.empty or finite.iloc[0] <= 0:
    return math.nan, math.nan, None
  peak_index = finite.idxmax()
  return float(finite.max() / finite.iloc[0]), float(finite.max()), int(m.loc[peak_index, "step"])


def final_value(run_dir: str, metric: str) -> float:
  """The metric at the last logged step where it is finite (NaN if never)."""
  return first_and_final(run_dir, metric)[1]


def final_window(runs: pd.DataFrame) -> int:
  """Steps to average "final" metrics over: the paper's last 500 of 1e5 steps is its last 0.5%;
  over a short run that is one log row, so the last 10% of training, at least 3 log rows."""
  steps = float(runs["train.steps"].max()) if "train.steps" in runs else 1e5
  every = float(runs["train.log_every"].max()) if "train.log_every" in runs else 100
  return 500 if steps >= 1e5 else int(max(0.1 * steps, 3 * every))


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
  """Rank correlation; NaN with fewer than three finite pairs."""
  frame = pd.DataFrame({"x": x, "y": y}).replace([np.inf, -np.inf], np.nan).dropna()
  if len(frame) < 3:
    return math.nan
  return float(frame["x"].rank().corr(frame["y"].rank()))


def combine(parts: dict[str, str]) -> str:
  """One verdict from the verdicts of a claim's parts: a part that failed decides, then one
  that could not be run, then one that cannot be tested here."""
  verdicts = set(parts.values())
  if NOT_REPRODUCED in verdicts:
    return NOT_REPRODUCED
  if NOT_RUN in verdicts:
    return NOT_RUN
  if NOT_TESTABLE in verdicts:
    return NOT_TESTABLE
  return REPRODUCED


def judged(holds: bool) -> str:
  return REPRODUCED if holds else NOT_REPRODUCED


def missing(*experiments: str) -> Finding:
  return Finding(NOT_RUN, "no finished runs",
                 f"run `python -m launch.reproduce --only={','.join(experiments)}`",
                 {"missing": list(experiments)})


def fmt(x: float, digits: int = 3) -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "-" if x is None or math.isnan(x) else ("∞" if x > 0 else "-∞")
  return f"{x:.{digits}g}"
