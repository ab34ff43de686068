"""The paper's figures from result folders (docs/paper_notes.md#experiments), drawn with
matplotlib. Importing this module leaves matplotlib's backend alone.

Every function returns a `matplotlib.figure.Figure` (no pyplot state) and, given `save_to`,
writes `<save_to>.png` and `<save_to>.svg`. Each figure has labelled axes, a legend, a title
and a grey footnote with the experiment name and the config shared by the runs drawn.

  runs = results.load_runs("results/fig1_qk_layernorm")
  loss_vs_lr(runs, save_to="out/loss_vs_lr")
  make_experiment_figures("results/fig1_qk_layernorm", "out")
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Iterable, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis import claims, prediction, results, sensitivity

FORMATS = ("png", "svg")
LINESTYLES = ("-", "--", ":", "-.")
EPS_DEFAULT = 1e-8


# ---------------------------------------------------------------------------------------------
# Shared pieces


def save(fig: Figure, path: results.PathLike,
         formats: Sequence[str] = FORMATS) -> list[str]:
  """Writes `fig` as `<path>.<fmt>` for each format (local or GCS); returns the paths."""
  stem = results.as_path(path)
  stem.parent.mkdir(parents=True, exist_ok=True)
  written = []
  for fmt in formats:
    target = stem.parent / f"{stem.name}.{fmt}"
    with target.open("wb") as f:
      fig.savefig(f, format=fmt, dpi=150)
    written.append(str(target))
  return written


MAX_COLUMNS = 3  # more panels wrap onto further rows (five in a row made a 3750 × 600 strip)


def _figure(panels: int = 1, panel_width: float = 5.0, height: float = 4.0,
            sharey: bool = False) -> tuple[Figure, list[Axes]]:
  """A figure of `panels` panels, at most MAX_COLUMNS a row; the unused cells of the last row
  are removed."""
  ncols = min(panels, MAX_COLUMNS)
  nrows = -(-panels // ncols)
  fig = Figure(figsize=(panel_width * ncols, height * nrows))
  axes = list(fig.subplots(nrows, ncols, sharey=sharey, squeeze=False).flat)
  for ax in axes[panels:]:
    fig.delaxes(ax)
  return fig, axes[:panels]


def _finish(fig: Figure, title: str, footnote: str | None,
            save_to: results.PathLike | None, formats: Sequence[str]) -> Figure:
  """Title, footnote and layout; saves when `save_to` is given."""
  fig.suptitle(title)
  bottom = 0.0
  if footnote:
    width = int(fig.get_figwidth() * 16)
    text = "\n".join(textwrap.wrap(footnote, width))
    fig.text(0.01, 0.01, text, fontsize=7, color="0.4", ha="left", va="bottom")
    bottom = 0.03 + 0.03 * text.count("\n")
  fig.tight_layout(rect=(0, bottom, 1, 1))
  if save_to is not None:
    save(fig, save_to, formats)
  return fig


def _size_colors(num_params: Iterable[float]) -> dict[float, tuple]:
  """One viridis colour per model size, from small (dark) to large (light)."""
  sizes = sorted(set(num_params))
  cmap = matplotlib.colormaps["viridis"]
  return {n: cmap(i / max(1, len(sizes) - 1) * 0.8) for i, n in enumerate(sizes)}  # no faint yellow


def _lr_colors(lrs: Iterable[float]) -> dict[float, tuple]:
  lrs = sorted(set(lrs))
  cmap = matplotlib.colormaps["plasma"]
  return {lr: cmap(i / max(1, len(lrs) - 1) * 0.85) for i, lr in enumerate(lrs)}


def params_label(n: float) -> str:
  """2.36e6 -> '2.4M'."""
  if not np.isfinite(n):
    return "?"
  for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
    if n >= scale:
      return f"{n / scale:.3g}{unit}"
  return f"{n:.0f}"


def _size_label(size: str, num_params: float) -> str:
  return f"{size} ({params_label(num_params)})"


def _footnote(runs: pd.DataFrame, footnote: str | None) -> str:
  return footnote if footnote is not None else results.describe(runs)


# ---------------------------------------------------------------------------------------------
# Fig 1/3/5/6/7/8 (top): final eval loss vs LR


def _draw_loss_curve(ax: Axes, runs: pd.DataFrame, init_loss: float, color: Any,
                     label: str, linestyle: str = "-", marker: str = "o") -> None:
  """One size: the clipped loss min(ℓ, ℓ0) vs LR (the mean over seeds), diverged points drawn
  at ℓ0 as crosses (an LR where every seed diverged)."""
  runs = runs.sort_values("lr")
  losses = runs["final_eval_loss"].to_numpy(float)
  failed = (runs["status"] == "diverged").to_numpy() | ~np.isfinite(losses)
  clipped = sensitivity.clipped_losses(losses, init_loss, failed) if np.isfinite(init_loss) \
      else np.where(failed, np.nan, losses)
  per_lr = pd.DataFrame({"lr": runs["lr"].to_numpy(float), "loss": clipped, "failed": failed})
  per_lr = per_lr.groupby("lr").agg(loss=("loss", "mean"), failed=("failed", "all"))
  lrs, shown, failed = (per_lr.index.to_numpy(float), per_lr["loss"].to_numpy(float),
                        per_lr["failed"].to_numpy(bool))
  ax.plot(lrs, shown, linestyle, color=color, label=label, marker=marker, markersize=4)
  if failed.any() and np.isfinite(init_loss):
    ax.plot(lrs[failed], shown[failed], "x", color="crimson", markersize=8, mew=2)


def loss_vs_lr(runs: pd.DataFrame, *, arms: Sequence[str] | None = None,
               title: str = "Final eval loss vs learning rate", footnote: str | None = None,
               save_to: results.PathLike | None = None, formats: Sequence[str] = FORMATS) -> Figure:
  """Final eval loss vs peak LR (log x): one panel per arm, one line per size.

  Diverged runs (or non-finite losses) are drawn at ℓ0 with a red cross; ℓ0 (the mean loss at
  initialization) is a dashed line. Only done/diverged runs are drawn.
  """
  runs = runs[runs["status"].isin(results.FINISHED) & runs["lr"].notna()]
  if runs.empty:
    raise ValueError("no done or diverged run with a learning rate")
  arms = list(arms or sorted(runs["arm"].unique()))
  fig, axes = _figure(len(arms), sharey=True)
  size_colors = _size_colors(runs["num_params"])
  init_loss = float(runs["init_eval_loss"].mean())
  for ax, arm in zip(axes, arms):
    arm_runs = runs[runs["arm"] == arm]
    by_size = arm_runs.sort_values("num_params").groupby(["size", "num_params"], sort=False,
                                                         dropna=False)
    for (size, num_params), group in by_size:
      _draw_loss_curve(ax, group, init_loss, size_colors.get(num_params, "0.3"),
                       _size_label(size, num_params))
    if np.isfinite(init_loss):
      ax.axhline(init_loss, color="0.5", ls="--", lw=1, label=f"ℓ0 (init) = {init_loss:.2f}")
    if (arm_runs["status"].eq("diverged") | ~np.isfinite(arm_runs["final_eval_loss"])).any():
      ax.plot([], [], "x", color="crimson", mew=2, label="diverged (at ℓ0)")
    _dress_lr_panel(ax, arm)
  axes[0].set_ylabel("final eval loss")
  return _finish(fig, title, _footnote(runs, footnote), save_to, formats)


def _dress_lr_panel(ax, arm) -> None:
  ax.set_xscale("log")
  ax.set_xlabel("peak learning rate")
  ax.set_title(str(arm))
  ax.grid(True, which="major", alpha=0.3)
  ax.legend(fontsize=7)


def two_sweeps_loss_vs_lr(a_runs: pd.DataFrame, b_runs: pd.DataFrame, *,
                          labels: tuple[str, str] = ("reference", "yours"),
                          title: str = "Final eval loss vs learning rate, two sweeps",
                          save_to: results.PathLike | None = None,
                          formats: Sequence[str] = FORMATS) -> Figure:
  """Two sweeps of one grid overlaid: one panel per arm, one colour per size, sweep `a` solid
  with circles and sweep `b` dashed with squares (seed means, diverged points at ℓ0)."""
  sweeps = [r[r["status"].isin(results.FINISHED) & r["lr"].notna()] for r in (a_runs, b_runs)]
  if any(r.empty for r in sweeps):
    raise ValueError("each sweep needs a done or diverged run with a learning rate")
  arms = sorted(set(sweeps[0]["arm"]) | set(sweeps[1]["arm"]))
  fig, axes = _figure(len(arms), sharey=True)
  size_colors = _size_colors(pd.concat(sweeps)["num_params"])
  init_loss = float(pd.concat(sweeps)["init_eval_loss"].mean())
  for ax, arm in zip(axes, arms):
    for runs, label, style, marker in zip(sweeps, labels, ("-", "--"), ("o", "s")):
      by_size = runs[runs["arm"] == arm].sort_values("num_params").groupby(
          ["size", "num_params"], sort=False, dropna=False)
      for (size, num_params), group in by_size:
        _draw_loss_curve(ax, group, init_loss, size_colors.get(num_params, "0.3"),
                         f"{_size_label(size, num_params)}, {label}", style, marker)
    _dress_lr_panel(ax, arm)
  axes[0].set_ylabel("final eval loss (min with ℓ0)")
  footnote = f"{labels[0]}: {results.describe(a_runs)}; {labels[1]}: {results.describe(b_runs)}"
  return _finish(fig, title, footnote, save_to, formats)


# ---------------------------------------------------------------------------------------------
# Fig 1/3/5/6/7/8 (bottom): LR sensitivity vs N


def sensitivity_vs_params(table: pd.DataFrame, *, title: str = "LR sensitivity vs model size",
                          footnote: str | None = None, save_to: results.PathLike | None = None,
                          formats: Sequence[str] = FORMATS) -> Figure:
  """LR sensitivity vs non-embedding parameters (log x), one curve per arm: the mean over seeds,
  with bars from the lowest to the highest seed where there are several."""
  if table.empty:
    raise ValueError("the LR-sensitivity table is empty")
  fig, (ax,) = _figure()
  for i, (arm, group) in enumerate(table.groupby("arm", sort=True)):
    by_size = group.groupby("num_params")["sensitivity"].agg(["mean", "min", "max"]).sort_index()
    line, = ax.plot(by_size.index, by_size["mean"], marker="o",
                    ls=LINESTYLES[i // 10 % len(LINESTYLES)], label=str(arm))
    if (by_size["max"] > by_size["min"]).any():
      ax.errorbar(by_size.index, by_size["mean"], fmt="none", ecolor=line.get_color(), capsize=3,
                  yerr=[by_size["mean"] - by_size["min"], by_size["max"] - by_size["mean"]])
  ax.set_xscale("log")
  ax.set_xlabel("non-embedding parameters")
  ax.set_ylabel("LR sensitivity")
  ax.grid(True, which="major", alpha=0.3)
  ax.legend(fontsize=8, title="arm", title_fontsize=8)
  if footnote is None:
    spec = table.attrs.get("sweep") or {}
    footnote = " · ".join(filter(None, [spec.get("experiment"), _rule_note(table)]))
  return _finish(fig, title, footnote, save_to, formats)


def loss_vs_kappa(runs: pd.DataFrame, *, bigram_arm: str = "bigram",
                  title: str = "Final eval loss with the attention logits forced to size κ",
                  footnote: str | None = None, save_to: results.PathLike | None = None,
                  formats: Sequence[str] = FORMATS) -> Figure:
  """Fig 10: final eval loss vs κ (`model.forced_kappa` of the `kappa-*` arms), one line per
  size, and the zero-layer bigram model's loss as a dashed line."""
  runs = runs[runs["status"].isin(results.FINISHED)]
  forced = runs[runs["arm"].astype(str).str.startswith("kappa-")]
  if forced.empty:
    raise ValueError("no finished kappa-* run")
  fig, (ax,) = _figure()
  for size, group in forced.groupby("size"):
    group = group.assign(kappa=group["model.forced_kappa"].astype(float)).sort_values("kappa")
    ax.plot(group["kappa"], group["final_eval_loss"], marker="o", label=f"{size}")
  for _, row in runs[runs["arm"] == bigram_arm].iterrows():
    ax.axhline(row["final_eval_loss"], color="0.4", ls="--", lw=1,
               label=f"bigram ({row['size']}) = {row['final_eval_loss']:.2f}")
  ax.set(xscale="log", xlabel="κ (forced logit size)", ylabel="final eval loss")
  ax.grid(True, which="major", alpha=0.3)
  ax.legend(fontsize=8)
  return _finish(fig, title, _footnote(runs, footnote), save_to, formats)


def _rule_note(table: pd.DataFrame) -> str:
  if table.empty:
    return ""
  pairs = table[["rule", "lr_range"]].drop_duplicates()
  return "; ".join(f"{r.rule} over {r.lr_range}" for r in pairs.itertuples())


# ---------------------------------------------------------------------------------------------
# Fig 2/4/E.1/E.13: a metric over training


def _run_label(row: pd.Series, several_seeds: bool = False) -> str:
  seed = f" seed {row['seed']:g}" if several_seeds and pd.notna(row.get("seed")) else ""
  return f"{row['arm']} {row['size']} lr={row['lr']:.0e}{seed}"


def metric_over_training(runs: pd.DataFrame, metric: str, *, logy: bool | None = None,
                         title: str | None = None, footnote: str | None = None,
                         save_to: results.PathLike | None = None,
                         formats: Sequence[str] = FORMATS) -> Figure:
  """`metric` (e.g. `attn_logit_max/block_0`, `output_logit/mean`) vs step, one line per run.

  Log y when `logy` is None and every finite value is positive. A diverged run's divergence
  step is marked with a red cross on its line. Raises ValueError if no run logged `metric`.
  """
  fig, (ax,) = _figure(panel_width=6.0)
  finite_values = []
  colors_by_size = _size_colors(runs["num_params"])
  several_seeds = "seed" in runs and runs["seed"].nunique() > 1
  first_seed = runs["seed"].min() if several_seeds else None
  for _, row in runs.iterrows():
    metrics = results.load_metrics(row["run_dir"], columns=[metric])
    if metric not in metrics.columns or metrics[metric].isna().all():
      continue
    values = metrics[metric].to_numpy(float)
    finite_values.append(values[np.isfinite(values)])
    ax.plot(metrics["step"], values, ls=_arm_style(runs, row["arm"]),
            color=colors_by_size.get(row["num_params"], "0.3"),
            alpha=1.0 if not several_seeds or row["seed"] == first_seed else 0.5,
            label=_run_label(row, several_seeds))
    _mark_divergence(ax, row, metrics, metric)
  if not finite_values:
    raise ValueError(f"no run logged {metric!r}")
  all_values = np.concatenate(finite_values)
  if logy if logy is not None else (all_values.size and (all_values > 0).all()):
    ax.set_yscale("log")
  ax.set_xlabel("training step")
  ax.set_ylabel(metric)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=7)
  return _finish(fig, title or f"{metric} over training", _footnote(runs, footnote), save_to,
                 formats)


def _arm_style(runs: pd.DataFrame, arm: str) -> str:
  arms = sorted(runs["arm"].unique())
  return LINESTYLES[arms.index(arm) % len(LINESTYLES)]


def _mark_divergence(ax: Axes, row: pd.Series, metrics: pd.DataFrame, metric: str) -> None:
  step = row.get("diverged_at_step")
  if row["status"] != "diverged" or step is None or not np.isfinite(float(step)):
    return
  before = metrics[(metrics["step"] <= float(step)) & np.isfinite(metrics[metric])]
  if len(before):
    ax.plot(before["step"].iloc[-1], before[metric].iloc[-1], "x", color="crimson", mew=2)


# ---------------------------------------------------------------------------------------------
# Fig 11/12/E.12/C.1: RMS of a tensor vs N or LR


def _window_label(runs: pd.DataFrame, last_steps: int) -> str:
  """What `results.final_mean` averaged over, said of these runs (shorter runs: all steps)."""
  steps = pd.to_numeric(runs.get("train.steps"), errors="coerce").dropna() \
      if "train.steps" in runs else pd.Series(dtype=float)
  if not steps.empty and steps.max() <= last_steps:
    return f"mean over all {int(steps.max())} steps"
  return f"mean over the final {last_steps} steps"


def rms_vs(runs: pd.DataFrame, metric: str = "grad_rms/block_0/mlp/wi/kernel", *,
           x: str = "num_params", last_steps: int = 500, eps: float | None = None,
           title: str | None = None, footnote: str | None = None,
           save_to: results.PathLike | None = None,
           formats: Sequence[str] = FORMATS) -> Figure:
  """`metric` averaged over the final `last_steps` steps, vs N (one line per LR) or vs LR (one
  line per size); log-log; line style per arm; `eps` draws the AdamW ε reference line.
  """
  if x not in ("num_params", "lr"):
    raise ValueError(f"x={x!r}: expected 'num_params' or 'lr'")
  points = results.with_metric(runs, metric, last_steps=last_steps, column="value")
  points = points[np.isfinite(points["value"]) & (points["value"] > 0)]
  if points.empty:
    raise ValueError(f"no run has a finite positive {metric!r} over its final {last_steps} steps")
  curve_key = "lr" if x == "num_params" else "num_params"
  palette = _lr_colors(points["lr"]) if x == "num_params" else _size_colors(points["num_params"])
  fig, (ax,) = _figure()
  for (arm, key), group in points.groupby(["arm", curve_key], sort=True):
    group = group.sort_values(x)
    label = f"lr={key:.0e}" if x == "num_params" else _size_label(group["size"].iloc[0], key)
    if points["arm"].nunique() > 1:
      label = f"{arm} {label}"
    ax.plot(group[x], group["value"], marker="o", color=palette.get(key, "0.3"),
            ls=_arm_style(points, arm), label=label)
  if eps is not None:
    ax.axhline(eps, color="0.3", ls=":", lw=1.2, label=f"AdamW ε = {eps:g}")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("non-embedding parameters" if x == "num_params" else "peak learning rate")
  ax.set_ylabel(f"{metric}\n({_window_label(points, last_steps)})")
  ax.grid(True, which="major", alpha=0.3)
  ax.legend(fontsize=7)
  title = title or f"{metric.split('/')[0]} vs {'model size' if x == 'num_params' else 'LR'}"
  return _finish(fig, title, _footnote(runs, footnote), save_to, formats)


# ---------------------------------------------------------------------------------------------
# Fig 9: max attention logit vs N with the quadratic fits


def max_logit_vs_params(points: pd.DataFrame, fits: pd.DataFrame, *,
                        threshold: float = prediction.THRESHOLD,
                        title: str = "Max attention logit vs model size",
                        footnote: str | None = None, save_to: results.PathLike | None = None,
                        formats: Sequence[str] = FORMATS) -> Figure:
  """Points from `prediction.max_logit_points`, fits from `prediction.predict_divergence`.

  One colour per LR: measured points (hollow if the run diverged), the fitted quadratic in
  log-log space extended to the target size / threshold crossing, and the threshold line.
  """
  fig, (ax,) = _figure(panel_width=6.0)
  palette = _lr_colors(fits["lr"])
  for fit in fits.itertuples():
    group = points[(points["arm"] == fit.arm) & (points["lr"] == fit.lr)]
    group = group[np.isfinite(group["max_logit"]) & (group["max_logit"] > 0)]
    color = palette[fit.lr]
    ax.scatter(group["num_params"], group["max_logit"], color=color, zorder=3,
               label=f"lr={fit.lr:.0e}" + (f" ({fit.arm})" if fits["arm"].nunique() > 1 else ""))
    _draw_fit(ax, fit, group, color)
  ax.axhline(threshold, color="crimson", ls="--", lw=1, label=f"divergence threshold {threshold:g}")
  # What the marks mean, in grey, once (the colours above are the LRs).
  ax.plot([], [], color="0.4", lw=1, label="quadratic fit (log-log)")
  ax.scatter([], [], marker="*", s=90, facecolors="none", edgecolors="0.4",
             label="predicted at the target size")
  ax.scatter([], [], marker="D", color="0.4", label="measured at the target size")
  ax.set_xscale("log")
  ax.set_yscale("log")
  step = points.attrs.get("step", prediction.STEP)
  ax.set_xlabel("non-embedding parameters")
  ax.set_ylabel(f"max attention logit (block 0, step {step})")
  ax.grid(True, which="major", alpha=0.3)
  ax.legend(fontsize=7)
  return _finish(fig, title, _footnote(points, footnote), save_to, formats)


def _draw_fit(ax: Axes, fit: Any, group: pd.DataFrame, color: Any) -> None:
  coefs = np.array([fit.c2, fit.c1, fit.c0])
  if not np.all(np.isfinite(coefs)):
    return
  ends = [fit.fit_min_params, fit.fit_max_params, fit.target_params, fit.crossing_params]
  ends = [e for e in ends if np.isfinite(e)]
  grid = np.logspace(math.log10(min(ends)), math.log10(max(ends) * 1.5), 100)
  ax.plot(grid, prediction.fitted_max_logit(coefs, grid), color=color, lw=1, alpha=0.8)
  if np.isfinite(fit.predicted_max_logit):
    ax.scatter([fit.target_params], [fit.predicted_max_logit], marker="*", s=90,
               facecolors="none", edgecolors=color, zorder=3)
  if np.isfinite(fit.measured_max_logit):
    ax.scatter([fit.target_params], [fit.measured_max_logit], marker="D", color=color, zorder=3)


def prediction_figure(runs: pd.DataFrame):
  """Fig 9: the ladder's max logits, the fits per LR, the threshold and the target's points."""
  ladder, measured, threshold, step, _ = claims.prediction_inputs(runs)
  target_params = float(measured["num_params"].iloc[0]) if len(measured) else None
  fits = prediction.predict_divergence(ladder, target_params, threshold)
  points = pd.concat([ladder, measured.reset_index()])
  return max_logit_vs_params(points, fits, threshold=threshold,
                             title=f"Max attention logit of block 0 at step {step}")


# ---------------------------------------------------------------------------------------------
# The standard set for one sweep


def _highest_lr_runs(runs: pd.DataFrame) -> pd.DataFrame:
  """For each arm, the runs (all sizes) at that arm's highest LR."""
  runs = runs[runs["lr"].notna()]
  top = runs.groupby("arm")["lr"].transform("max")
  return runs[runs["lr"] == top]


def make_experiment_figures(sweep_dir: results.PathLike, out_dir: results.PathLike,
                            formats: Sequence[str] = FORMATS,
                            runs: pd.DataFrame | None = None) -> list[str]:
  """Loss vs LR, LR sensitivity vs N, and block-0 max attention logit over training at each
  arm's highest LR, for one sweep; returns the files written. A figure without data is skipped
  with a warning.
  """
  runs = results.load_runs(sweep_dir) if runs is None else runs
  out = results.as_path(out_dir)
  table = sensitivity.sensitivity_table(runs)
  standard = {
      "loss_vs_lr": lambda: loss_vs_lr(runs),
      "sensitivity_vs_params": lambda: sensitivity_vs_params(table),
      "attn_logit_max_block0": lambda: metric_over_training(
          _highest_lr_runs(runs), prediction.METRIC,
          title="Max attention logit (block 0) at each arm's highest LR"),
  }
  problems = results.Problems()
  written = []
  for name, draw in standard.items():
    try:
      written += save(draw(), out / name, formats)
    except ValueError as e:
      problems.add(f"figure {name} skipped: {e}")
  return written


# ---------------------------------------------------------------------------------------------
# The demo's headline: qk-layernorm against attention-logit growth (Figs 1 and 2 in one)


def _headline_lr(runs: pd.DataFrame, stable_arm: str) -> float:
  """The highest LR at which every run of the stable arm (each size and seed) finished without
  diverging."""
  stable = runs[runs["arm"] == stable_arm]
  all_done = (stable["status"] == "done").groupby(stable["lr"]).all()
  return float(all_done[all_done].index.max()) if all_done.any() else float(runs["lr"].max())


def qk_layernorm_headline(runs: pd.DataFrame, *, lr: float | None = None,
                          arms: tuple[str, str] = ("qkln-on", "qkln-off"),
                          save_to: results.PathLike | None = None,
                          formats: Sequence[str] = FORMATS) -> Figure:
  """Three panels: final eval loss vs LR for both arms; then, at one high LR, the max attention
  logit of block 0 and the train loss over training."""
  runs = runs[runs["status"].isin(results.FINISHED) & runs["arm"].isin(arms)]
  if runs.empty:
    raise ValueError(f"no finished runs of arms {arms}")
  lr = lr if lr is not None else _headline_lr(runs, arms[0])
  colors = {arms[0]: "tab:blue", arms[1]: "tab:red"}
  several_seeds = "seed" in runs and runs["seed"].nunique() > 1
  fig, (ax_lr, ax_logit, ax_loss) = _figure(3, panel_width=4.6)
  init_loss = float(runs["init_eval_loss"].mean())
  # One line style per size in all three panels; colour per arm; later seeds fainter.
  sizes = runs.drop_duplicates("size").sort_values("num_params")["size"].tolist()
  size_style = {size: LINESTYLES[i % len(LINESTYLES)] for i, size in enumerate(sizes)}
  first_seed = runs["seed"].min() if several_seeds else None
  for arm in arms:
    arm_runs = runs[runs["arm"] == arm]
    for size in sizes:  # small to large
      if (arm_runs["size"] == size).any():
        _draw_loss_curve(ax_lr, arm_runs[arm_runs["size"] == size], init_loss, colors[arm],
                         f"{arm} {size}", linestyle=size_style[size])
    at_lr = runs[(runs["arm"] == arm) & np.isclose(runs["lr"], lr)]
    for _, row in at_lr.sort_values(["num_params"]).iterrows():
      m = results.load_metrics(row["run_dir"], columns=["attn_logit_max/block_0", "train_loss"])
      if m.empty or not {"attn_logit_max/block_0", "train_loss"} <= set(m.columns):
        continue
      label = f"{arm} {row['size']}" + (f" seed {row['seed']:g}" if several_seeds else "")
      style = dict(color=colors[arm], ls=size_style[row["size"]], label=label,
                   alpha=1.0 if not several_seeds or row["seed"] == first_seed else 0.5)
      ax_logit.plot(m["step"], m["attn_logit_max/block_0"], **style)
      ax_loss.plot(m["step"], m["train_loss"], **style)
  if not ax_logit.lines:
    raise ValueError(f"no run at LR {lr:g} logged attn_logit_max/block_0 and train_loss")
  ax_lr.axhline(init_loss, color="0.5", ls="--", lw=1, label="ℓ0 (init)")
  ax_lr.axvline(lr, color="0.7", ls=":", lw=1)
  ax_lr.set(xscale="log", xlabel="peak learning rate", ylabel="final eval loss",
            title="loss vs LR (× diverged)")
  ax_logit.set(yscale="log", xlabel="training step", ylabel="max attention logit, block 0",
               title=f"attention logits at LR {lr:g}")
  ax_loss.set(xlabel="training step", ylabel="train loss (CE)", title=f"train loss at LR {lr:g}")
  for ax in (ax_lr, ax_logit, ax_loss):
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
  return _finish(fig, "qk-layernorm prevents attention-logit growth at high learning rates",
                 _footnote(runs, None), save_to, formats)
