"""Predicting attention-logit-growth divergence from small models (Fig 9, paper §3.3).

For each LR (of models without qk-layernorm), take the max attention logit of block 0 at
training step S (default 2000; the last logged step at or before S), fit a quadratic in
log10(N) to log10(max logit), and extrapolate: the size at which the fit first reaches the
threshold 1e4 (every run above it diverged in the paper) and the logit predicted at a target N.
A run at the target size, if there is one, confirms or refutes the prediction.

  points = max_logit_points(load_runs("results/fig9"))
  table = predict_divergence(points, target_params=4.83e9)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from analysis import results

THRESHOLD = 1e4
METRIC = "attn_logit_max/block_0"
STEP = 2000
# Runs whose num_params is within this relative distance of the target are "at" the target.
_SAME_SIZE_RTOL = 0.01


def max_logit_points(runs: pd.DataFrame, step: int = STEP, metric: str = METRIC) -> pd.DataFrame:
  """`runs` plus `max_logit` (the metric at the last logged step ≤ `step`), `max_logit_step`."""
  points = results.with_metric(runs, metric, at_step=step, column="max_logit")
  points.attrs.update(runs.attrs, step=step, metric=metric)
  return points


def fit_quadratic(num_params: Sequence[float], max_logit: Sequence[float]) -> np.ndarray:
  """Coefficients (c2, c1, c0) of log10(logit) ≈ c2·x² + c1·x + c0 with x = log10(N).

  Least squares; with two points the fit is a line (c2 = 0); with fewer it is all NaN.
  """
  x = np.log10(np.asarray(num_params, float))
  y = np.log10(np.asarray(max_logit, float))
  if len(x) < 2:
    return np.full(3, math.nan)
  coefs = np.polyfit(x, y, deg=min(2, len(x) - 1))
  return np.concatenate([np.zeros(3 - len(coefs)), coefs])


def fitted_max_logit(coefs: np.ndarray, num_params: float | Sequence[float]) -> np.ndarray:
  """The max logit the fit predicts at `num_params`."""
  return 10.0 ** np.polyval(coefs, np.log10(np.asarray(num_params, float)))


def crossing_params(coefs: np.ndarray, threshold: float = THRESHOLD,
                    start_params: float = 1.0) -> float | None:
  """The smallest N ≥ `start_params` at which the fit reaches `threshold`; None if it never does.

  Solves c2·x² + c1·x + c0 = log10(threshold) for x = log10(N). If the fit is already at or
  above the threshold at `start_params`, that is the answer.
  """
  if not np.all(np.isfinite(coefs)):
    return None
  x0, target = math.log10(start_params), math.log10(threshold)
  if np.polyval(coefs, x0) >= target:
    return float(start_params)
  shifted = np.array(coefs, float) - np.array([0.0, 0.0, target])
  roots = [r.real for r in np.atleast_1d(np.roots(shifted))
           if abs(r.imag) < 1e-9 and x0 < r.real < 300]  # beyond 1e300 params: never
  return float(10.0 ** min(roots)) if roots else None


def _diverged(row: pd.Series) -> bool:
  """A run diverged if training said so, or if it finished with a non-finite loss."""
  loss = row.get("final_eval_loss")
  return row["status"] == "diverged" or (row["status"] == "done" and not np.isfinite(loss))


def _measurement(at_target: pd.DataFrame, predicted: float, threshold: float,
                 tolerance: float) -> dict:
  """How a run at the target size compares with the prediction (empty values if no run)."""
  if at_target.empty:
    return {"run": None, "measured_max_logit": math.nan, "measured_step": None,
            "measured_diverged": None, "ratio": math.nan, "logit_near_prediction": None,
            "confirmed": None}
  row = at_target.iloc[0]
  measured = float(row["max_logit"])
  ratio = measured / predicted if predicted > 0 else math.nan
  near = bool(np.isfinite(ratio) and abs(math.log10(ratio)) <= math.log10(tolerance))
  diverged = _diverged(row)
  return {"run": row["name"], "measured_max_logit": measured,
          "measured_step": row.get("max_logit_step"), "measured_diverged": diverged,
          "ratio": ratio, "logit_near_prediction": near,
          "confirmed": diverged == (predicted >= threshold)}


def _predict_one(group: pd.DataFrame, target_params: float | None, threshold: float,
                 tolerance: float) -> dict:
  """One row of the prediction table from the points of one (arm, lr)."""
  at_target = pd.Series(False, index=group.index)
  if target_params:
    at_target = (group["num_params"] / target_params - 1).abs() <= _SAME_SIZE_RTOL
  usable = np.isfinite(group["max_logit"]) & (group["max_logit"] > 0) & ~at_target
  if target_params:
    usable &= group["num_params"] < target_params
  fit_points = group[usable]
  coefs = fit_quadratic(fit_points["num_params"], fit_points["max_logit"])
  start = float(fit_points["num_params"].min()) if len(fit_points) else 1.0
  crossing = crossing_params(coefs, threshold, start)
  predicted = float(fitted_max_logit(coefs, target_params)) if target_params else math.nan
  first = group.iloc[0]
  return {
      "arm": first["arm"], "lr": first["lr"], "n_fit": len(fit_points),
      "fit_min_params": start if len(fit_points) else math.nan,
      "fit_max_params": float(fit_points["num_params"].max()) if len(fit_points) else math.nan,
      "c2": coefs[0], "c1": coefs[1], "c0": coefs[2],
      "crossing_params": math.nan if crossing is None else crossing,
      "target_params": target_params or math.nan, "predicted_max_logit": predicted,
      "predicted_diverges": bool(predicted >= threshold) if target_params else None,
      **_measurement(group[at_target], predicted, threshold, tolerance),
  }


def predict_divergence(points: pd.DataFrame, target_params: float | None = None,
                       threshold: float = THRESHOLD, tolerance: float = 3.0) -> pd.DataFrame:
  """The Fig 9 prediction per (arm, lr), from `max_logit_points`.

  Fits use the points below `target_params` (all points when it is None). Columns: arm, lr,
  n_fit, fit_min_params, fit_max_params, c2, c1, c0 (the fit in log10 space), crossing_params
  (smallest N where the fit reaches `threshold`; NaN if never), target_params,
  predicted_max_logit, predicted_diverges, and for a run at the target size: run,
  measured_max_logit, measured_step, measured_diverged, ratio (measured / predicted),
  logit_near_prediction (within a factor `tolerance`), confirmed (the divergence prediction
  came true). Groups with fewer than two usable points get NaN coefficients.
  """
  rows = [_predict_one(group, target_params, threshold, tolerance)
          for _, group in points.groupby(["arm", "lr"], sort=True)]
  table = pd.DataFrame(rows)
  table.attrs.update(points.attrs, threshold=threshold)
  return table
