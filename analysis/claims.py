"""The paper's checkable claims, each a function of the sweeps it reads (docs/reproduction.md).

Each `Claim` names the sweeps it reads and a check that returns an `evidence.Finding`: the numbers
it measured and a verdict. A direction the paper states counts as reproduced only where it holds
beyond the seed-to-seed spread of the replicated headline sweep (`evidence.Spread`).

  python -m analysis.claims reference/cpu   # each claim's verdict on the committed reference runs
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import pandas as pd

from analysis import evidence as ev
from analysis import prediction, sensitivity

FIG1, FIG3, FIG5, FIG6 = ("fig1_qk_layernorm", "fig3_output_logit_divergence", "fig5_warmup",
                          "fig6_weight_decay")
FIG7, FIG8, FIG9, FIG10, FIG11 = ("fig7_width_depth", "fig8_mup", "fig9_prediction",
                                  "fig10_forced_logits", "fig11_grad_rms")
E7, E8, E9, E10, E11 = ("e7_steps", "e8_qkln_granularity", "e9_batch_size", "e10_weight_decay",
                        "e11_pointwise_attention")


@dataclasses.dataclass(frozen=True)
class Claim:
  number: int
  figure: str
  paper: str                       # the paper's statement, in our words
  sweeps: tuple[str, ...]          # the experiments it reads
  check: Callable[[ev.Sweeps], ev.Finding]


# ---------------------------------------------------------------------------------------------
# 1. Fig 1: qk-layernorm and LR sensitivity across sizes


def headline_gaps(runs: pd.DataFrame, rule: sensitivity.Rule | None = None) -> pd.DataFrame:
  """Per size: sensitivity with (on) and without (off) qk-layernorm, their gap and seed range."""
  table = ev.mean_sensitivity(runs, rule)
  on = ev.arm_rows(table, "qkln-on").set_index("size")
  off = ev.arm_rows(table, "qkln-off").set_index("size")
  sizes = [s for s in ev.sizes_by_params(runs) if s in on.index and s in off.index]
  return pd.DataFrame({
      "num_params": on.loc[sizes, "num_params"], "on": on.loc[sizes, "sensitivity"],
      "off": off.loc[sizes, "sensitivity"],
      "gap": off.loc[sizes, "sensitivity"] - on.loc[sizes, "sensitivity"],
      "seed_range": np.maximum(on.loc[sizes, "seed_range"], off.loc[sizes, "seed_range"]),
      "init": on.loc[sizes, "init_loss"]}, index=sizes)


def higher_without_qkln(gaps: pd.DataFrame, spread: float) -> pd.Series:
  """Per size: claim 1's first part, the gap above both that size's seed range and `spread`."""
  return (gaps["gap"] > gaps["seed_range"]) & (gaps["gap"] > spread)


def _coincide_below_critical(runs: pd.DataFrame, gaps: pd.DataFrame
                             ) -> tuple[float, dict, int]:
  """The largest |loss_on − loss_off| at the LRs below each size's critical LR without qk-LN,
  the critical LRs, and how many (size, LR) points were compared."""
  worst, critical, compared = 0.0, {}, 0
  for size in gaps.index:
    on, off = ev.loss_curve(runs, "qkln-on", size), ev.loss_curve(runs, "qkln-off", size)
    critical[size] = ev.critical_lr(off, gaps.loc[size, "init"])
    below = [lr for lr in off.index if lr < critical[size] and lr in on.index]
    compared += len(below)
    if below:
      worst = max(worst, float((on[below] - off[below]).abs().max()))
  return worst, critical, compared


def hard_failures(runs: pd.DataFrame, arm: str, lr_range: tuple[float, float],
                  tolerance: float) -> tuple[int, float]:
  """Runs of `arm` inside the LR range that failed hard (diverged, or ended within `tolerance`
  of ℓ0), and how far back to ℓ0 the worst run came (0 at its arm's best, 1 at ℓ0)."""
  table = ev.clipped_losses(runs[runs["arm"] == arm])
  inside = table[(table["lr"] >= lr_range[0] * (1 - 1e-6)) & (table["lr"] <= lr_range[1] * (1 + 1e-6))]
  if inside.empty:
    return 0, math.nan
  best = inside.groupby("size")["loss"].transform("min")
  back = ((inside["loss"] - best) / (inside["init"] - best)).max()
  return int((inside["loss"] >= inside["init"] - tolerance).sum()), float(back)


def sensitivity_range(runs: pd.DataFrame) -> tuple[float, float]:
  spec = (runs.attrs.get("sweep") or {}).get("sensitivity") or {}
  lo, hi = (spec.get("ranges") or [[runs["lr"].min(), runs["lr"].max()]])[0]
  return float(lo), float(hi)


# The page also shows the headline over every LR of the cpu grid inside the paper's range.
PAPER_RANGE_IN_GRID = (1e-3, 3e-1)


def _ratio(a: float, b: float) -> float:
  return a / b if b else math.nan


def _ratios_text(gaps: pd.DataFrame) -> str:
  return ", ".join(f"{size} ×{ev.fmt(_ratio(r.on, r.off), 2)}" for size, r in gaps.iterrows())


def check_fig1(s: ev.Sweeps) -> ev.Finding:
  runs = s.runs(FIG1)
  if runs is None:
    return ev.missing(FIG1)
  gaps = headline_gaps(runs)
  if len(gaps) < 2:
    return ev.Finding(ev.NOT_TESTABLE, "fewer than two sizes with both arms", "needs ≥ 2 sizes")
  spread = s.spread
  worst_gap, critical, compared = _coincide_below_critical(runs, gaps)
  crit = [critical[size] for size in gaps.index]
  coincide = "curves coincide below the critical LR"
  parts = {
      "higher without qk-LN at every size": ev.judged(
          bool(higher_without_qkln(gaps, spread.sensitivity).all())),
      "gap grows with size": ev.judged(
          gaps["gap"].iloc[-1] - gaps["gap"].iloc[0] > spread.sensitivity),
      coincide: ev.judged(worst_gap <= spread.loss) if compared else ev.NOT_TESTABLE,
      "critical LR without qk-LN falls with size": ev.judged(
          all(b <= a for a, b in zip(crit, crit[1:])) and crit[-1] < crit[0]),
  }
  lr_range = sensitivity_range(runs)
  hard, back = hard_failures(runs, "qkln-off", lr_range, spread.loss)
  causes = {} if hard else {coincide: (
      f"no run without qk-LN in [{ev.fmt(lr_range[0])}, {ev.fmt(lr_range[1])}] failed hard (the "
      f"worst came {back:.0%} of the way back to ℓ0); the paper's critical LR is a divergence, "
      "and without one the cut marks where a gradual rise crosses a fifth, not an edge")}
  wide_range = headline_gaps(runs, sensitivity.Rule("single", (PAPER_RANGE_IN_GRID,)))
  ours = "; ".join(f"{size}: {ev.fmt(r.on)} vs {ev.fmt(r.off)} (×{ev.fmt(_ratio(r.on, r.off), 2)})"
                   for size, r in gaps.iterrows())
  reason = (f"Seed spread of sensitivity {ev.fmt(spread.sensitivity)} ({spread.seeds} seeds); "
            f"critical LR without qk-LN (where the loss has come a fifth of the way back to ℓ0, "
            f"interpolated) {', '.join(ev.fmt(c) for c in crit)}; largest loss gap between the "
            f"arms below it {ev.fmt(worst_gap)} (tolerance {ev.fmt(spread.loss)}). Ratio with / "
            f"without over [{ev.fmt(PAPER_RANGE_IN_GRID[0])}, {ev.fmt(PAPER_RANGE_IN_GRID[1])}] "
            f"instead: {_ratios_text(wide_range)}.")
  return ev.parts_finding(
      parts, f"sensitivity with vs without qk-LN — {ours}", reason,
      {"sizes": list(gaps.index), "sensitivity_on": list(gaps["on"]),
       "sensitivity_off": list(gaps["off"]), "gap": list(gaps["gap"]),
       "seed_range": list(gaps["seed_range"]), "critical_lr_off": crit,
       "max_loss_gap_below_critical": worst_gap, "hard_failures_off": hard,
       "ratio_paper_range": [_ratio(a, b) for a, b in zip(wide_range["on"], wide_range["off"])]},
      causes)


# ---------------------------------------------------------------------------------------------
# 2, 3, 13. Attention-logit growth (Fig 2, Fig E.1, Fig E.11)


def top_trained_lr(runs: pd.DataFrame) -> float:
  """The highest LR of the sweep's LR-sensitivity range (the 'high LR' of the paper's plots)."""
  spec = (runs.attrs.get("sweep") or {}).get("sensitivity") or {}
  ranges = spec.get("ranges") or [[runs["lr"].min(), runs["lr"].max()]]
  return float(max(hi for _, hi in ranges))


def _growth_rows(runs: pd.DataFrame, arm: str, lr: float) -> pd.DataFrame:
  rows = runs[(runs["arm"] == arm) & np.isclose(runs["lr"], lr)]
  out = []
  for _, row in rows.iterrows():
    growth, peak, step = ev.peak_growth(row["run_dir"])
    out.append({"size": row["size"], "num_params": row["num_params"], "seed": row["seed"],
                "growth": growth, "peak": peak, "peak_step": step, "run_dir": row["run_dir"]})
  return pd.DataFrame(out, columns=["size", "num_params", "seed", "growth", "peak", "peak_step",
                                    "run_dir"])


def logit_growth(runs: pd.DataFrame, unstable: str, stable: str) -> tuple[dict, pd.DataFrame,
                                                                           pd.DataFrame]:
  """At the top LR and the largest size: growth of block 0's max logit in each arm."""
  lr = top_trained_lr(runs)
  off, on = _growth_rows(runs, unstable, lr), _growth_rows(runs, stable, lr)
  largest = ev.sizes_by_params(runs)[-1]
  off_l, on_l = off[off["size"] == largest], on[on["size"] == largest]
  numbers = {"lr": lr, "size": largest, "growth_unstable": list(off_l["growth"]),
             "growth_stable": list(on_l["growth"]), "peak_unstable": list(off_l["peak"]),
             "peak_stable": list(on_l["peak"])}
  return numbers, off_l, on_l


def _growth_finding(runs: pd.DataFrame, unstable: str, stable: str, what: str) -> ev.Finding:
  numbers, off, on = logit_growth(runs, unstable, stable)
  if off.empty or on.empty:
    return ev.Finding(ev.NOT_RUN, "no runs at the top LR", "", numbers)
  grows = bool((off["growth"] >= ev.ORDERS_OF_MAGNITUDE).all())
  bounded = bool((on["growth"] < ev.ORDERS_OF_MAGNITUDE).all())
  apart = bool(off["peak"].min() >= 10 * on["peak"].max())
  parts = {f"{what} grows ≥ 100×": ev.judged(grows), "bounded with qk-LN": ev.judged(bounded),
           "10× apart at the peak": ev.judged(apart)}
  ours = (f"{numbers['size']} at LR {ev.fmt(numbers['lr'])}: max logit of block 0 grows "
          f"×{', ×'.join(ev.fmt(g) for g in off['growth'])} to {', '.join(ev.fmt(p) for p in off['peak'])} "
          f"({unstable}) vs ×{', ×'.join(ev.fmt(g) for g in on['growth'])} to "
          f"{', '.join(ev.fmt(p) for p in on['peak'])} ({stable})")
  return ev.Finding(ev.combine(parts), ours, "; ".join(f"{k}: {v}" for k, v in parts.items()),
                    {**numbers, "parts": parts})


def check_fig2(s: ev.Sweeps) -> ev.Finding:
  runs = s.runs(FIG1)
  return ev.missing(FIG1) if runs is None else _growth_finding(runs, "qkln-off", "qkln-on",
                                                               "without qk-LN the logit")


def check_e1(s: ev.Sweeps) -> ev.Finding:
  """Share of the logit growth (in log space) that the product of q and k norms accounts for."""
  runs = s.runs(FIG1)
  if runs is None:
    return ev.missing(FIG1)
  numbers, off, _ = logit_growth(runs, "qkln-off", "qkln-on")
  shares, cosines = [], []
  columns = ["step", ev.LOGIT, "q_norm/block_0", "k_norm/block_0", "qk_cos/block_0"]
  for _, row in off.iterrows():
    # A run that did not log all four has no rows; a run with no peak has a NaN peak_step.
    m = ev.metric_frame(row["run_dir"], *columns[1:]).reindex(columns=columns)
    m = m.replace([np.inf, -np.inf], np.nan).dropna()
    if pd.isna(row["peak_step"]) or m.empty or m["step"].iloc[0] > row["peak_step"]:
      continue
    first, at_peak = m.iloc[0], m[m["step"] <= row["peak_step"]].iloc[-1]
    norms = (at_peak["q_norm/block_0"] * at_peak["k_norm/block_0"]
             / (first["q_norm/block_0"] * first["k_norm/block_0"]))
    shares.append(math.log(norms) / math.log(row["growth"]) if row["growth"] > 1 else math.nan)
    cosines.append((float(first["qk_cos/block_0"]), float(at_peak["qk_cos/block_0"])))
  if not shares:
    return ev.Finding(ev.NOT_RUN, "no qkln-off run at the top LR with q/k norms", "", numbers)
  grew = np.nanmin(numbers["growth_unstable"]) >= ev.ORDERS_OF_MAGNITUDE
  verdict = (ev.judged(min(shares) >= 0.5) if grew else ev.NOT_TESTABLE)
  reason = ("the norms account for more than half of the growth in every seed" if verdict ==
            ev.REPRODUCED else "the logit did not grow by two orders of magnitude" if not grew
            else "the cosine accounts for more of the growth than the norms")
  return ev.parts_finding(
      {"the q and k norms, not their cosine, account for the growth": verdict},
      f"{numbers['size']} at LR {ev.fmt(numbers['lr'])} without qk-LN: |q|·|k| accounts "
      f"for {', '.join(f'{x:.0%}' for x in shares)} of the log-growth of the max logit; cosine "
      + ", ".join(f"{a:.2f}→{b:.2f}" for a, b in cosines), reason,
      {**numbers, "norm_share": shares, "cosine_first_peak": cosines})


def check_e11(s: ev.Sweeps) -> ev.Finding:
  runs = s.runs(E11)
  return ev.missing(E11) if runs is None else _growth_finding(
      runs, "squared-relu_qkln-off", "squared-relu_qkln-on", "with squared-ReLU attention the logit")


# ---------------------------------------------------------------------------------------------
# 4. Figs 3-4: output-logit divergence


def _drift_row(row: pd.Series) -> dict:
  """One run's output-logit drift: the change of the mean logit and of |log Z| from step 0 to
  the end, and how far its last eval loss sits above its best."""
  evals = ev.results.load_eval(row["run_dir"])
  after = evals[evals["step"] > 0]["eval_loss"]
  late = float(after.iloc[-1] - after.min()) if len(after) else math.nan
  z0, z1 = ev.first_and_final(row["run_dir"], "output_logit/log_z_mean")
  m0, m1 = ev.first_and_final(row["run_dir"], "output_logit/mean")
  return {"arm": row["arm"], "steps": int(row.get("train.steps", 0) or 0), "log_z": z1,
          "log_z_move": abs(z1) - abs(z0), "mean_logit": m1, "mean_logit_move": m1 - m0,
          "late_rise": late}


def _longest_drift(runs: pd.DataFrame, size: str, lr: float) -> pd.DataFrame:
  """Per recipe (z-loss × decay, without a horizon suffix): the drift of its longest run at
  (size, lr), averaged over seeds."""
  at = runs[(runs["size"] == size) & np.isclose(runs["lr"], lr)]
  drift = pd.DataFrame([_drift_row(r) for _, r in at.iterrows()])
  drift["recipe"] = drift["arm"].str.replace(r"_T\d+$", "", regex=True)
  longest = drift.groupby("recipe")["steps"].transform("max")
  drift = drift[drift["steps"] == longest]
  return drift.groupby("recipe")[["steps", "log_z", "log_z_move", "mean_logit",
                                  "mean_logit_move", "late_rise"]].mean()


def check_fig3(s: ev.Sweeps) -> ev.Finding:
  runs = s.runs(FIG3)
  if runs is None:
    return ev.missing(FIG3)
  size = ev.sizes_by_params(runs)[0]
  lr = nearest_lr(runs, 0.1)  # Fig 4: LR 0.1 on the smallest model
  drift = _longest_drift(runs, size, lr)
  need = {"zloss-off_wd-off", "zloss-on_wd-off", "zloss-off_wd-on"}
  if not need <= set(drift.index):
    return ev.Finding(ev.NOT_RUN, f"arms missing at {size}, LR {lr}", "", {})
  plain, zloss = drift.loc["zloss-off_wd-off"], drift.loc["zloss-on_wd-off"]
  wide = _sens_by_arm(runs[~runs["arm"].str.contains(r"_T\d+$", regex=True)])
  spread = s.spread
  z_gain = wide["zloss-off_wd-off"] - wide["zloss-on_wd-off"]
  wd_gain = wide["zloss-off_wd-off"] - wide["zloss-off_wd-on"]
  log_z_leaves = bool(plain["log_z_move"] > 1)
  parts = {
      "the mean output logit drifts negative without decay": ev.judged(
          plain["mean_logit_move"] < -1),
      "log Z leaves 0 without z-loss": ev.judged(log_z_leaves),
      "the loss degrades late": ev.judged(plain["late_rise"] > spread.loss),
      "z-loss keeps log Z near 0": ev.judged(abs(zloss["log_z"]) < 0.5 * abs(plain["log_z"])),
      "z-loss lowers LR sensitivity at every size": ev.judged(
          bool((z_gain > spread.sensitivity).all())),
      "weight decay alone lowers it at the largest size": ev.judged(
          wd_gain.iloc[-1] > spread.sensitivity),
  }
  causes = {}
  if not log_z_leaves:  # the consequences of an output-logit divergence that did not happen
    why = (f"log Z did not leave 0: over {int(plain['steps'])} steps without decay or z-loss "
           f"its distance from 0 changed by {ev.fmt(plain['log_z_move'])} (from about ln V at "
           "step 0), so the output-logit divergence these parts are about did not start")
    causes = {p: why for p in ("the loss degrades late", "z-loss lowers LR sensitivity at every "
                               "size", "weight decay alone lowers it at the largest size")}
  ours = "; ".join(f"{a} ({int(r.steps)} steps): log Z {ev.fmt(r.log_z)} ({r.log_z_move:+.2f} "
                   f"in distance from 0), mean logit {ev.fmt(r.mean_logit)} "
                   f"({r.mean_logit_move:+.2f}), late rise {ev.fmt(r.late_rise)}"
                   for a, r in drift.iterrows())
  return ev.parts_finding(
      parts, f"{size} at LR {ev.fmt(lr)} — {ours}; LR sensitivity — {_wide_text(wide)}",
      f"seed spreads: loss {ev.fmt(spread.loss)}, sensitivity {ev.fmt(spread.sensitivity)}",
      {"size": size, "lr": lr, "drift": drift.reset_index().to_dict("records"),
       "sensitivity": wide.to_dict()}, causes)


def nearest_lr(runs: pd.DataFrame, lr: float) -> float:
  lrs = np.array(sorted(runs["lr"].unique()), float)
  return float(lrs[np.argmin(np.abs(np.log(lrs / lr)))])


# ---------------------------------------------------------------------------------------------
# 5, 6, 14. Interventions compared by LR sensitivity


def _sens_by_arm(runs: pd.DataFrame) -> pd.DataFrame:
  """size × arm table of mean LR sensitivity, sizes by parameter count."""
  table = ev.mean_sensitivity(runs)
  wide = table.pivot(index="size", columns="arm", values="sensitivity")
  return wide.loc[[s for s in ev.sizes_by_params(runs) if s in wide.index]]


def _wide_text(wide: pd.DataFrame) -> str:
  return "; ".join(f"{size}: " + ", ".join(f"{arm} {ev.fmt(v)}" for arm, v in row.items())
                   for size, row in wide.iterrows())


def check_fig5(s: ev.Sweeps) -> ev.Finding:
  runs = s.runs(FIG5)
  if runs is None:
    return ev.missing(FIG5)
  wide = _sens_by_arm(runs)
  arms = sorted(wide.columns, key=lambda a: int(a.split("-")[-1]))
  short, long = arms[0], arms[-1]
  gain = wide[short] - wide[long]
  spread = s.spread.sensitivity
  parts = {"longer warm-up lowers sensitivity at the largest size": ev.judged(
               gain.iloc[-1] > spread),
           "most for the larger models": ev.judged(gain.iloc[-1] - gain.iloc[0] > spread)}
  return ev.Finding(ev.combine(parts), _wide_text(wide[arms]),
                    "; ".join(f"{k}: {v}" for k, v in parts.items())
                    + f" (seed spread {ev.fmt(spread)})",
                    {"sensitivity": wide.to_dict(), "gain": gain.to_dict(), "parts": parts})


def _decay_totals(runs: pd.DataFrame) -> dict[str, float]:
  """Per independent-decay arm: the largest λ·T (per-step decay × steps) among its runs."""
  independent = runs[runs["opt.weight_decay_mode"] == "independent"]
  totals = (independent["opt.weight_decay"] * independent["train.steps"]).groupby(
      independent["arm"]).max()
  return {arm: float(total) for arm, total in totals.items()}


def _losses_at_lowest_shared_lr(runs: pd.DataFrame) -> str:
  """'at LR 0.001 — d64-L2: wd-coupled 2.63, ...': mean final losses at the lowest LR every arm
  trained, per size."""
  shared = set.intersection(*(set(g["lr"]) for _, g in runs.groupby("arm")))
  if not shared:
    return "no LR that every arm trained"
  lr = min(shared)
  losses = ev.clipped_losses(runs[runs["lr"] == lr]).groupby(["size", "arm"])["loss"].mean()
  return f"final loss at LR {ev.fmt(lr)} — " + "; ".join(
      f"{size}: " + ", ".join(f"{arm} {ev.fmt(v)}" for arm, v in losses[size].items())
      for size in ev.sizes_by_params(runs) if size in losses.index.get_level_values("size"))


def check_fig6(s: ev.Sweeps) -> ev.Finding:
  """Judged on the paper's λ for both arms (at LR 1e-3 the arms then decay alike: 0.1 × 1e-3 =
  1e-4). `wd-independent-matched`, where trained, is reported: the coupled arm cannot be matched
  the same way (at cpu scale λ = 33, and η·λ ≥ 1 from LR 0.03)."""
  runs = s.runs(FIG6)
  if runs is None:
    return ev.missing(FIG6)
  wide, totals = _sens_by_arm(runs), _decay_totals(runs)
  spread = s.spread.sensitivity
  gap = wide["wd-coupled"] - wide["wd-independent"]
  part = "independent decay less sensitive than coupled at every size"
  parts = {part: ev.judged(bool((gap > spread).all()))}
  reason = (f"coupled minus independent: {', '.join(ev.fmt(g) for g in gap)} "
            f"(seed spread {ev.fmt(spread)})")
  causes = {}
  if totals["wd-independent"] < 1:
    causes[part] = (
        f"the independent arm's total decay λ·T is {ev.fmt(totals['wd-independent'])}, against the "
        "paper's 10: it compares coupled decay with next to none. The paper's totals for "
        "both arms (λ·T = 10, equal at LR 1e-3) make coupled decay per step η·1e4/T, 3000/T at "
        "LR 0.3: below 0.1, as a decay per step must be to act as decay, only from T = 30,000 "
        "steps, a hundred times the cpu run")
  if "wd-independent-matched" in wide:
    matched = wide["wd-coupled"] - wide["wd-independent-matched"]
    reason += (f". With the paper's total instead (λ·T "
               f"{ev.fmt(totals['wd-independent-matched'])}; coupled decay cannot be matched "
               f"so), coupled minus independent: {', '.join(ev.fmt(g) for g in matched)}; "
               + _losses_at_lowest_shared_lr(runs))
  return ev.parts_finding(parts, _wide_text(wide), reason,
                          {"sensitivity": wide.to_dict(), "decay_totals": totals}, causes)


def _still_learning(runs: pd.DataFrame, tolerance: float) -> str:
  """E.7: '' if the longest arm's best loss is within `tolerance` of the default's (the middle
  arm of 0.5×, 1×, 2× the steps) at every size; else what shows the runs are still in their
  fast-learning phase."""
  table = ev.mean_sensitivity(runs)
  best = table.pivot(index="size", columns="arm", values="best_loss")
  steps = runs.groupby("arm")["train.steps"].max().sort_values()
  if steps.nunique() < 2:
    return ""
  longest, default = steps.index[-1], steps.index[len(steps) // 2]  # E.7: 0.5×, 1×, 2×
  drop = best[default] - best[longest]
  if (drop <= tolerance).all():
    return ""
  return (f"still in the fast-learning phase: the best loss falls by up to {ev.fmt(drop.max())} "
          f"from {steps[default]} to {steps[longest]} steps (tolerance {ev.fmt(tolerance)})")


def _qkln_granularity(runs: pd.DataFrame, tolerance: float) -> tuple[str, str, dict, str]:
  """Per head vs full width, at the sizes with more than one head (with one head they are the
  same model): the verdict, a line, the numbers and why it would not be testable."""
  best = ev.mean_sensitivity(runs).pivot(index="size", columns="arm", values="best_loss")
  heads = (runs.groupby("size")["model.num_heads"].first() if "model.num_heads" in runs
           else None)
  multi = [size for size in best.index if heads is None or heads.get(size, 1) > 1]
  diff = (best.loc[multi, "qkln-full_width"] - best.loc[multi, "qkln-per_head"])
  why = ("every size has one head, where the two are the same model" if not multi else
         "at the sizes with more than one head the difference is inside the loss tolerance: a "
         "'slight' gain needs more seeds or more heads to resolve")
  if not multi:
    verdict = ev.NOT_TESTABLE
  elif (diff > tolerance).all():
    verdict = ev.REPRODUCED
  elif (diff < -tolerance).any():
    verdict = ev.NOT_REPRODUCED
  else:
    verdict = ev.NOT_TESTABLE  # a difference inside the tolerance: the design cannot resolve it
  line = ("best loss per-head vs full-width: " + ", ".join(
      f"{size} {ev.fmt(r['qkln-per_head'], 4)} vs {ev.fmt(r['qkln-full_width'], 4)}"
      + ("" if size in multi else " (one head: the same model)") for size, r in best.iterrows())
      + f" (tolerance {ev.fmt(tolerance)})")
  return verdict, line, best.to_dict(), why


def check_ablations(s: ev.Sweeps) -> ev.Finding:
  parts, lines, numbers, causes, untestable = {}, [], {}, {}, {}
  spread = s.spread
  for name, label in ((E7, "steps"), (E9, "batch size")):
    runs = s.runs(name)
    part = f"{label} leaves sensitivity roughly unchanged"
    if runs is None:
      parts[part] = ev.NOT_RUN
      continue
    wide = _sens_by_arm(runs)
    change = float((wide.max(axis=1) - wide.min(axis=1)).max())
    parts[part] = ev.judged(change <= 2 * spread.sensitivity)
    learning = _still_learning(runs, spread.loss) if name == E7 else ""
    if learning:
      causes[part] = learning
    lines.append(f"{label}: {_wide_text(wide)}")
    numbers[label] = wide.to_dict()
  runs = s.runs(E8)
  if runs is None:
    parts["per-head qk-LN slightly better"] = ev.NOT_RUN
  else:
    verdict, line, best, why = _qkln_granularity(runs, spread.loss)
    parts["per-head qk-LN slightly better"] = verdict
    untestable["per-head qk-LN slightly better"] = why
    lines.append(line)
    numbers["best_loss_qkln"] = best
  runs = s.runs(E10)
  if runs is None:
    parts["more decay moves the optimal LR right"] = ev.NOT_RUN
  else:
    best_lr = ev.mean_sensitivity(runs).pivot(index="size", columns="arm", values="best_lr")
    arms = sorted(best_lr.columns, key=lambda a: float(a.split("-", 1)[1]))
    rising = [bool(np.all(np.diff(np.log10(row[arms].to_numpy(float))) >= 0)
                   and row[arms[-1]] > row[arms[0]]) for _, row in best_lr.iterrows()]
    parts["more decay moves the optimal LR right"] = ev.judged(any(rising) and all(
        row[arms[-1]] >= row[arms[0]] for _, row in best_lr.iterrows()))
    lines.append("best LR by decay: " + "; ".join(
        f"{size}: " + ", ".join(f"{a} {ev.fmt(row[a])}" for a in arms)
        for size, row in best_lr.iterrows()))
    numbers["best_lr_by_decay"] = best_lr.to_dict()
  return ev.parts_finding(parts, " | ".join(lines) or "no runs",
                          f"seed spreads: sensitivity {ev.fmt(spread.sensitivity)}, loss "
                          f"{ev.fmt(spread.loss)}", numbers, causes, untestable)


# ---------------------------------------------------------------------------------------------
# 7, 8. Width vs depth, μParam


def _slope(rows: pd.DataFrame) -> float:
  x, y = np.log10(rows["num_params"].to_numpy(float)), rows["sensitivity"].to_numpy(float)
  return float(np.polyfit(x, y, 1)[0]) if len(rows) >= 2 and np.ptp(x) > 0 else math.nan


def _span(rows: pd.DataFrame) -> float:
  """Decades of parameters a direction spans."""
  return float(np.ptp(np.log10(rows["num_params"].to_numpy(float)))) if len(rows) else 0.0


def check_fig7(s: ev.Sweeps) -> ev.Finding:
  runs = s.runs(FIG7)
  if runs is None:
    return ev.missing(FIG7)
  table = ev.mean_sensitivity(runs)
  width = ev.arm_rows(table, "width_qkln-on")
  depth = ev.arm_rows(table, "depth_qkln-on")
  slopes = {"width": _slope(width), "depth": _slope(depth)}
  spread = s.spread.sensitivity
  spans = {"width": _span(width), "depth": _span(depth)}
  # How much one seed-spread move of a direction's sensitivity can tilt its slope, summed.
  tolerance = sum(spread / span if span > 0 else math.inf for span in spans.values())
  diff = slopes["depth"] - slopes["width"]
  part = "depth raises sensitivity faster than width"
  verdict = (ev.REPRODUCED if diff > tolerance else ev.NOT_REPRODUCED if diff < -tolerance
             else ev.NOT_TESTABLE)
  ours = (f"slope of sensitivity per decade of parameters: depth {ev.fmt(slopes['depth'])}, "
          f"width {ev.fmt(slopes['width'])}; depth {', '.join(f'{r.size} {ev.fmt(r.sensitivity)}' for r in depth.itertuples())}; "
          f"width {', '.join(f'{r.size} {ev.fmt(r.sensitivity)}' for r in width.itertuples())}")
  reason = (f"difference {ev.fmt(diff)} per decade; a seed spread of {ev.fmt(spread)} over spans "
            f"of {ev.fmt(spans['depth'], 2)} (depth) and {ev.fmt(spans['width'], 2)} (width) "
            f"decades tilts the slopes by up to {ev.fmt(tolerance)}")
  causes = {part: f"the difference, {ev.fmt(diff)} per decade, is inside what the seed spread "
                  f"can tilt over these spans ({ev.fmt(tolerance)}); spans of a decade or more "
                  "in each direction, or more seeds, would be needed"}
  return ev.parts_finding({part: verdict}, ours, reason,
                          {"slopes": slopes, "spans": spans, "tolerance": tolerance},
                          untestable=causes)


def _best_lr_shift(rows: pd.DataFrame) -> float:
  """How far the best LR moves across sizes, in half-decade grid steps."""
  lrs = np.log10(rows["best_lr"].to_numpy(float))
  return float(np.ptp(lrs) / 0.5) if len(lrs) else math.nan


def check_fig8(s: ev.Sweeps) -> ev.Finding:
  runs = s.runs(FIG8)
  if runs is None:
    return ev.missing(FIG8)
  table = ev.mean_sensitivity(runs)
  std_on, mup_on = ev.arm_rows(table, "standard_qkln-on"), ev.arm_rows(table, "mup-simple_qkln-on")
  mup_off = ev.arm_rows(table, "mup-simple_qkln-off")
  spread = s.spread.sensitivity
  shift_std, shift_mup = _best_lr_shift(std_on), _best_lr_shift(mup_on)
  full = runs[(runs["arm"] == "mup-full_qkln-on") & np.isclose(runs["lr"], 1.0)]
  full_ok = [r.status != "diverged" and np.isfinite(r.final_eval_loss)
             and r.final_eval_loss < r.init_eval_loss - 0.5 * (r.init_eval_loss
                                                               - mup_on["best_loss"].min())
             for r in full.itertuples()]
  parts = {
      "optimal LR steadier across widths": (
          ev.NOT_RUN if len(mup_on) < 2 else ev.NOT_TESTABLE if shift_std == 0
          else ev.judged(shift_mup <= 1 and shift_mup < shift_std)),
      "sensitivity not lower": ev.judged(
          mup_on["sensitivity"].iloc[-1] >= std_on["sensitivity"].iloc[-1] - spread)
      if len(mup_on) and len(std_on) else ev.NOT_RUN,
      "qk-LN still needed": ev.judged(
          mup_off["sensitivity"].iloc[-1] - mup_on["sensitivity"].iloc[-1] > spread)
      if len(mup_off) and len(mup_on) else ev.NOT_RUN,
      "μParam (full) + qk-LN trains at LR 1": ev.judged(bool(full_ok) and all(full_ok))
      if len(full) else ev.NOT_RUN,
  }
  ours = (f"best-LR shift across widths (half-decades): standard {ev.fmt(shift_std)}, μP "
          f"{ev.fmt(shift_mup)}; sensitivity at the widest: standard "
          f"{ev.fmt(std_on['sensitivity'].iloc[-1] if len(std_on) else math.nan)}, μP "
          f"{ev.fmt(mup_on['sensitivity'].iloc[-1] if len(mup_on) else math.nan)}, μP without "
          f"qk-LN {ev.fmt(mup_off['sensitivity'].iloc[-1] if len(mup_off) else math.nan)}; μP "
          f"(full) at LR 1: {', '.join(f'{r.final_eval_loss:.3f}' for r in full.itertuples())}")
  widths = runs.loc[runs["arm"] == "standard_qkln-on", "d_model"].astype(float)
  span = f"×{ev.fmt(widths.max() / widths.min(), 2)}" if widths.nunique() > 1 else "one width"
  causes = {"optimal LR steadier across widths": (
      f"the standard model's best LR does not move either over this width range ({span}), so "
      "μParam has nothing to hold steady; a range where it moves (the paper's spans 8×) is "
      "needed")}
  return ev.parts_finding(parts, ours, "", {"best_lr_shift": {"standard": shift_std,
                                                              "mup": shift_mup}},
                          untestable=causes)


# ---------------------------------------------------------------------------------------------
# 9, 10. Predicting divergence; forced logit size


def _failed_runs(runs: pd.DataFrame) -> pd.Series:
  """Per run: diverged, or at or above its size's critical LR (ev.critical_lr)."""
  failed = runs["status"] == "diverged"
  for size, group in runs.groupby("size"):
    curve = ev.loss_curve(runs, group["arm"].iloc[0], size)
    if len(curve) > 1:
      failed |= (runs["size"] == size) & (runs["lr"] >= ev.critical_lr(
          curve, float(group["init_eval_loss"].mean())))
  return failed


def ladder_threshold(points: pd.DataFrame) -> float:
  """The smallest early max logit above which every ladder run failed (NaN if none failed)."""
  ok = points.loc[~points["failed"], "max_logit"].max()
  above = points[points["failed"] & (points["max_logit"] > (ok if np.isfinite(ok) else 0))]
  return float(above["max_logit"].min()) if len(above) else math.nan


def prediction_inputs(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, float, int, dict]:
  """(ladder points, target points by LR, threshold, metric step, target spec) of a fig9 sweep."""
  spec = runs.attrs.get("sweep") or {}
  target = spec.get("target") or {}
  step = int(spec.get("metric_step") or prediction.STEP)
  points = prediction.max_logit_points(runs, step=step).assign(failed=_failed_runs(runs))
  at_target = points["size"] == target.get("size")
  ladder, measured = points[~at_target], points[at_target].set_index("lr")
  threshold = spec.get("threshold", prediction.THRESHOLD)
  threshold = ladder_threshold(ladder) if threshold == "ladder" else float(threshold)
  return ladder, measured, threshold, step, target


def check_fig9(s: ev.Sweeps) -> ev.Finding:
  runs = s.runs(FIG9)
  if runs is None:
    return ev.missing(FIG9)
  ladder, measured, threshold, step, target = prediction_inputs(runs)
  if measured.empty or ladder["size"].nunique() < 3:
    return ev.Finding(ev.NOT_RUN, "the target or the ladder has not finished", "", {})
  if not np.isfinite(threshold):
    return ev.Finding(ev.NOT_TESTABLE, "no ladder run failed", "nothing to predict", {})
  table = prediction.predict_divergence(ladder, float(measured["num_params"].iloc[0]), threshold)
  rows = []
  for r in table.itertuples():
    if r.lr in measured.index:
      got = measured.loc[r.lr]
      rows.append({"lr": r.lr, "predicted": r.predicted_max_logit, "measured": got["max_logit"],
                   "predicted_fails": bool(r.predicted_max_logit >= threshold),
                   "failed": bool(got["failed"])})
  checked = pd.DataFrame(rows)
  if checked.empty or checked["predicted"].isna().any():
    return ev.Finding(ev.NOT_TESTABLE, "the ladder gives no fit at some target LR", "",
                      {"threshold": threshold, "step": step})
  # The naive rule to beat: the target fails wherever the largest ladder size failed.
  largest = ladder[ladder["num_params"] == ladder["num_params"].max()].groupby("lr")["failed"]
  checked["naive_fails"] = [bool(largest.any().get(lr, False)) for lr in checked["lr"]]
  confirmed = checked["predicted_fails"] == checked["failed"]
  naive_wrong = checked["naive_fails"] != checked["failed"]
  ratio = np.abs(np.log10(checked["measured"] / checked["predicted"]))
  near = float(np.nanmedian(ratio)) <= math.log10(3)
  forecast = "forecasts whether the target fails, where the naive rule cannot"
  parts = {forecast: (ev.NOT_REPRODUCED if not confirmed.all() else ev.REPRODUCED
                      if naive_wrong.any() else ev.NOT_TESTABLE),
           "forecasts its logit within a factor 3": ev.judged(near)}
  ours = (f"{target.get('size')}, max logit of block 0 at step {step}, threshold "
          f"{ev.fmt(threshold)}: " + "; ".join(
              f"LR {ev.fmt(r.lr)} predicted {ev.fmt(r.predicted)} "
              f"({'fails' if r.predicted_fails else 'trains'}), measured {ev.fmt(r.measured)} "
              f"({'failed' if r.failed else 'trained'})" for r in checked.itertuples()))
  reason = (f"{int(confirmed.sum())} of {len(checked)} forecasts confirmed; the naive rule "
            f"'fails where the largest ladder size failed' was wrong at "
            + (", ".join(f"LR {ev.fmt(lr)}" for lr in checked.loc[naive_wrong, "lr"]) or "no LR")
            + ("" if naive_wrong.any() or not confirmed.all()
               else ", so the grid cannot tell the forecast from it")
            + f"; median measured/predicted logit within a factor "
              f"{ev.fmt(10 ** float(np.nanmedian(ratio)), 2)}")
  causes = {forecast: "the naive rule was right at every LR of the grid too, so the grid has no "
                      "point where the forecast could show what it adds"}
  return ev.parts_finding(parts, ours, reason, {"threshold": threshold, "step": step,
                                                "checked": checked.to_dict("records")},
                          untestable=causes)


def check_fig10(s: ev.Sweeps) -> ev.Finding:
  runs = s.runs(FIG10)
  if runs is None:
    return ev.missing(FIG10)
  losses = ev.clipped_losses(runs).groupby("arm")["loss"].mean()  # over seeds
  bigram = losses.get("bigram", math.nan)
  kappa = {float(a.split("-", 1)[1]): loss for a, loss in losses.items() if a.startswith("kappa-")}
  if not math.isfinite(bigram) or not any(k <= 100 for k in kappa) or 1e4 not in kappa:
    return ev.Finding(ev.NOT_RUN, "the bigram, κ ≤ 100 or κ = 1e4 runs are missing", "",
                      {"loss_by_kappa": kappa})
  small = min(v for k, v in kappa.items() if k <= 100)
  tol = s.spread.loss
  onset = min((k for k, v in sorted(kappa.items()) if v > small + tol), default=math.inf)
  parts = {"degrades from about κ = 1e3": ev.judged(300 <= onset <= 3e3),
           "worse than the bigram model at κ = 1e4": ev.judged(kappa.get(1e4, -1) > bigram)}
  ours = (", ".join(f"κ={k:g}: {v:.3f}" for k, v in sorted(kappa.items()))
          + f"; bigram {bigram:.3f}; degradation starts at κ = {ev.fmt(onset)}")
  return ev.Finding(ev.combine(parts), ours, "; ".join(f"{k}: {v}" for k, v in parts.items())
                    + f" (tolerance {ev.fmt(tol)})",
                    {"loss_by_kappa": kappa, "bigram": bigram, "onset": onset, "parts": parts})


# ---------------------------------------------------------------------------------------------
# 11, 12. Gradient and update RMS; block-output RMS


GRAD = "grad_rms/block_0/mlp/wi/kernel"
UPDATE = "update_rms/block_0/mlp/wi/kernel"


def _final_metric(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
  """The trained runs with `value` (the metric over the final window) and `init` (at step 0)."""
  trained = runs[runs["status"] == "done"]
  window = ev.final_window(runs)
  frames = [ev.metric_frame(r, metric) for r in trained["run_dir"]]
  values = [ev.results.final_mean(m, metric, window) for m in frames]
  inits = [float(m[metric].iloc[0]) if metric in m and len(m) else math.nan for m in frames]
  return trained.assign(value=values, init=inits)


def _falls_with(frame: pd.DataFrame, x: str, by: str) -> list[float]:
  return [ev.spearman(group[x], group["value"]) for _, group in frame.groupby(by)]


def _size_fall_vs_init(grad: pd.DataFrame) -> tuple[float, float]:
  """Median over LRs of log10(smallest size's / largest size's grad RMS), at the end and at
  step 0."""
  end, start = [], []
  for _, group in grad.groupby("lr"):
    group = group.sort_values("num_params")
    if len(group) >= 2:
      end.append(math.log10(group["value"].iloc[0] / group["value"].iloc[-1]))
      start.append(math.log10(group["init"].iloc[0] / group["init"].iloc[-1]))
  return (float(np.median(end)), float(np.median(start))) if end else (math.nan, math.nan)


def check_fig11(s: ev.Sweeps) -> ev.Finding:
  ladder, eps_runs = s.runs(FIG1), s.runs(FIG11)
  if ladder is None:
    return ev.missing(FIG1)
  grad = _final_metric(ladder[(ladder["arm"] == "qkln-on") & (ladder["seed"] == 0)], GRAD)
  by_size = [r for r in _falls_with(grad, "num_params", "lr") if np.isfinite(r)]
  by_lr = [r for r in _falls_with(grad, "lr", "size") if np.isfinite(r)]
  fall_end, fall_init = _size_fall_vs_init(grad)
  parts = {"grad RMS falls with size, more than at step 0": ev.judged(
               bool(by_size) and np.median(by_size) < 0 and fall_end > fall_init),
           "grad RMS falls with LR": ev.judged(bool(by_lr) and np.median(by_lr) < 0)}
  smallest = float(grad["value"].min()) if len(grad) else math.nan
  ours = (f"rank correlation of grad RMS with size (per LR) {', '.join(ev.fmt(r, 2) for r in by_size)}"
          f"; with LR (per size) {', '.join(ev.fmt(r, 2) for r in by_lr)}; smallest over largest "
          f"size ×{ev.fmt(10 ** fall_end)} at the end vs ×{ev.fmt(10 ** fall_init)} at step 0; "
          f"smallest grad RMS {ev.fmt(smallest)}")
  numbers = {"spearman_size": by_size, "spearman_lr": by_lr, "min_grad_rms": smallest,
             "size_fall_end": fall_end, "size_fall_init": fall_init}
  if eps_runs is None:
    parts["ε arms"] = ev.NOT_RUN
  else:
    parts.update(_epsilon_parts(eps_runs, numbers, s.spread, ladder))
    ours += "; " + numbers.get("eps_text", "")
  return ev.parts_finding(parts, ours, "", numbers, untestable=numbers.pop("causes", {}))


def _eps_rows(runs: pd.DataFrame, lr: float) -> dict[float, dict]:
  """Per ε at one LR: final grad RMS, unscaled update RMS and loss (ℓ0 if it failed)."""
  rows, window = {}, ev.final_window(runs)
  arms = runs[runs["arm"].str.startswith("eps-") & np.isclose(runs["lr"], lr)]
  for r in arms.itertuples():
    m = ev.metric_frame(r.run_dir, GRAD, UPDATE)
    rows[float(r.arm.split("-", 1)[1])] = {
        "grad": ev.results.final_mean(m, GRAD, window),
        "update": ev.results.final_mean(m, UPDATE, window),
        "loss": r.final_eval_loss if r.status == "done" else r.init_eval_loss}
  return rows


def _eps_text(lr: float, rows: dict[float, dict]) -> str:
  return f"ε arms at LR {ev.fmt(lr)}: " + ", ".join(
      f"ε={e:g}: grad {ev.fmt(v['grad'])}, update {ev.fmt(v['update'])}, loss {v['loss']:.3f}"
      for e, v in sorted(rows.items()))


def _epsilon_parts(runs: pd.DataFrame, numbers: dict, spread: ev.Spread,
                   ladder: pd.DataFrame) -> dict[str, str]:
  """Update RMS and loss of the ε arms, at the top LR and, where trained, at the LR nearest the
  default model's optimum: which ε sit above the gradient RMS, and what they do there."""
  eps_lrs = sorted(runs.loc[runs["arm"].str.startswith("eps-"), "lr"].unique())
  if not eps_lrs:
    return {"ε arms": ev.NOT_RUN}
  size = runs.loc[runs["arm"].str.startswith("eps-"), "size"].iloc[0]
  top, near = max(eps_lrs), min(eps_lrs)
  rows = {lr: _eps_rows(runs, lr) for lr in eps_lrs}
  if 1e-8 not in rows[top]:
    return {"ε arms": ev.NOT_RUN}
  numbers["eps"] = {ev.fmt(lr): r for lr, r in rows.items()}
  numbers["eps_text"] = "; ".join(_eps_text(lr, r) for lr, r in rows.items())
  base = rows[top][min(rows[top])]  # the smallest ε: the update without ε's damping
  above = {e: v for e, v in rows[top].items() if e >= v["grad"] and e != min(rows[top])}
  parts = {"update RMS falls once grad RMS nears ε (what Adam's m/(√v+ε) implies)": ev.judged(
      all(v["update"] < 0.5 * base["update"] for v in above.values())) if above
      else ev.NOT_TESTABLE}
  for eps, sign, label in ((1e-15, -1, "ε = 1e-15 helps where grad RMS nears 1e-8"),
                           (1e-6, +1, "ε = 1e-6 hurts where grad RMS nears it")):
    at = near if eps == 1e-6 else top
    ref, arm = rows[at].get(1e-8), rows[at].get(eps)
    if ref is None or arm is None:
      continue
    reference = 1e-8 if eps < 1e-8 else eps
    tol = ev.local_tolerance(spread, ev.point_seed_range(ladder, "qkln-on", size, at))
    if ref["grad"] >= 100 * reference:
      parts[label] = ev.NOT_TESTABLE
      numbers.setdefault("causes", {})[label] = (
          f"the grad RMS at LR {ev.fmt(at)} is {ev.fmt(ref['grad'])}, "
          f"{ev.fmt(ref['grad'] / reference, 2)}× above {reference:g}; the paper reaches "
          "ε ≈ grad RMS only at 4.8B parameters")
    else:
      parts[label] = ev.judged(sign * (arm["loss"] - ref["loss"]) > tol)
    numbers[f"tolerance_eps_{eps:g}"] = tol
  return parts


def _per_block(run_dir: str, layers: int, window: int) -> tuple[list[float], list[float]]:
  """Block-output RMS per block: over the final window, and at step 0."""
  names = [f"block_out_rms/block_{i}" for i in range(layers)]
  m = ev.metric_frame(run_dir, *names)
  final = [ev.results.final_mean(m, n, window) for n in names]
  first = [float(m[n].iloc[0]) if n in m and len(m) else math.nan for n in names]
  return final, first


# "Roughly flat in size": across the ladder, the RMS moves by less than this factor.
FLAT_FACTOR = 2.0
# "Rises with depth" beyond what the residual stream gives at step 0: by more than a fifth.
DEPTH_GROWTH = 1.2


def check_c1(s: ev.Sweeps) -> ev.Finding:
  runs = s.runs(FIG1)
  if runs is None:
    return ev.missing(FIG1)
  on = runs[(runs["arm"] == "qkln-on") & (runs["seed"] == 0)]
  block = int(min(2, on["num_layers"].min() - 1))
  rms = _final_metric(on, f"block_out_rms/block_{block}")
  with_lr = [r for r in _falls_with(rms, "lr", "size") if np.isfinite(r)]
  by_size = rms.pivot_table(index="lr", columns="size", values="value")
  by_lr = rms.pivot_table(index="size", columns="lr", values="value")
  size_ratio = float(np.nanmedian(by_size.max(axis=1) / by_size.min(axis=1)))
  lr_ratio = float(np.nanmedian(by_lr.max(axis=1) / by_lr.min(axis=1)))
  deepest = on[on["num_layers"] == on["num_layers"].max()]
  top = deepest[deepest["status"] == "done"].sort_values("lr").iloc[-1]
  per_block, at_init = _per_block(top["run_dir"], int(top["num_layers"]), ev.final_window(on))
  depth_growth = (per_block[-1] / per_block[0]) / (at_init[-1] / at_init[0])
  parts = {"rises with LR": ev.judged(bool(with_lr) and min(with_lr) > 0),
           "rises with depth, beyond step 0's": ev.judged(depth_growth > DEPTH_GROWTH),
           "roughly flat in size": ev.judged(size_ratio < FLAT_FACTOR)}
  ours = (f"block {block} output RMS: rank correlation with LR {', '.join(ev.fmt(r, 2) for r in with_lr)}"
          f"; largest over smallest size ×{ev.fmt(size_ratio)} (median over LRs; flat: below "
          f"×{ev.fmt(FLAT_FACTOR)}), across the LR grid ×{ev.fmt(lr_ratio)}; by block at "
          f"{top['size']} LR {ev.fmt(top['lr'])}: {', '.join(ev.fmt(v) for v in per_block)} "
          f"(step 0: {', '.join(ev.fmt(v) for v in at_init)}; last over first grew "
          f"×{ev.fmt(depth_growth)})")
  return ev.parts_finding(parts, ours, "", {
      "spearman_lr": with_lr, "size_ratio": size_ratio, "lr_ratio": lr_ratio,
      "per_block": per_block, "per_block_init": at_init, "depth_growth": depth_growth})


# ---------------------------------------------------------------------------------------------
# The list


CLAIMS = (
    Claim(1, "Fig 1", "Without qk-layernorm, LR sensitivity is higher and the gap grows with model "
          "size; below the critical LR the two curves coincide; without qk-layernorm the LR at "
          "which runs fail falls as size grows.", (FIG1,), check_fig1),
    Claim(2, "Fig 2", "At high LR without qk-layernorm the max attention logit of block 0 grows by "
          "orders of magnitude; with qk-layernorm it stays bounded.", (FIG1,), check_fig2),
    Claim(3, "Fig E.1", "That growth comes from the norms of queries and keys, not from their "
          "cosine.", (FIG1,), check_e1),
    Claim(4, "Figs 3-4", "Without weight decay the output logits drift negative, log Z leaves 0 and "
          "the loss degrades late in training; z-loss keeps log Z near 0; weight decay alone "
          "mitigates the drift.", (FIG3,), check_fig3),
    Claim(5, "Fig 5", "Longer warm-up lowers LR sensitivity, most for the larger models.",
          (FIG5,), check_fig5),
    Claim(6, "Fig 6", "Independent weight decay gives lower LR sensitivity than LR-coupled decay "
          "(scored by the minimum over two LR ranges).", (FIG6,), check_fig6),
    Claim(7, "Fig 7 / E.3", "Scaling depth raises LR sensitivity faster than scaling width.",
          (FIG7,), check_fig7),
    Claim(8, "Fig 8 / E.4 / E.5", "μParam keeps the optimal LR nearly constant across widths but "
          "does not lower LR sensitivity, does not remove the need for qk-layernorm, and μParam "
          "(full) with qk-layernorm trains at LR 1.", (FIG8,), check_fig8),
    Claim(9, "Fig 9", "A quadratic fit of the early max attention logit against size, over small "
          "models, predicts whether a larger model diverges at a given LR, and its logit.",
          (FIG9,), check_fig9),
    Claim(10, "Fig 10", "With the attention logits forced to size κ, the loss degrades from about "
          "κ = 1e3, and at κ = 1e4 it is worse than a bigram model.", (FIG10,), check_fig10),
    Claim(11, "Figs 11-13, E.13, E.15", "Gradient RMS falls with size and with LR; the unscaled "
          "update RMS falls once gradient RMS nears AdamW's ε; ε = 1e-15 helps there and "
          "ε = 1e-6 hurts.", (FIG1, FIG11), check_fig11),
    Claim(12, "App. C", "Block-output RMS rises with LR and with depth, and is roughly flat in "
          "model size.", (FIG1,), check_c1),
    Claim(13, "Fig E.11", "With pointwise (squared-ReLU) attention the attention logits still "
          "grow without qk-layernorm.", (E11,), check_e11),
    Claim(14, "Figs E.7-E.10", "Steps and batch size at equal tokens leave LR sensitivity roughly "
          "unchanged; per-head qk-layernorm is slightly better than full-width; more weight "
          "decay moves the optimal LR to the right.", (E7, E8, E9, E10), check_ablations),
)


def evaluate(root, claims=CLAIMS) -> list[tuple[Claim, ev.Finding]]:
  """Every claim checked on the sweeps under `root`; a check that fails is reported, not raised."""
  sweeps = ev.Sweeps(root)
  out = []
  for claim in claims:
    try:
      finding = claim.check(sweeps)
    except Exception as e:  # one broken sweep must not hide the other verdicts
      finding = ev.Finding(ev.NOT_RUN, f"could not be checked: {type(e).__name__}: {e}", "", {})
    out.append((claim, finding))
  return out


def main(argv: list[str] | None = None) -> int:
  """Prints each claim's verdict on a folder of sweeps (the page: `python -m
  analysis.reproduction`)."""
  import argparse
  parser = argparse.ArgumentParser(prog="python -m analysis.claims")
  parser.add_argument("root", help="a folder of sweeps, e.g. reference/cpu")
  args = parser.parse_args(argv)
  for claim, finding in evaluate(args.root):
    print(f"{claim.number:>2} {finding.verdict}: {finding.ours}")
  return 0


if __name__ == "__main__":
  import sys
  sys.exit(main())
