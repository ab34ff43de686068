"""docs/reproduction.md: every claim of analysis/claims.py checked on a folder of sweeps.

  python -m analysis.reproduction reference/cpu [--doc=docs/reproduction.md] [--figures=true]

The page is a pure function of the runs: `render(root)` returns its text, so a test can redraw it
from the committed reference runs and compare. Figures go to `<doc without .md>/<experiment>/`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Sequence

import numpy as np

from analysis import claims as claims_lib
from analysis import evidence as ev
from analysis import history
from analysis import results
from stability import result_format as fmt

COMMAND = "python -m launch.reproduce"
SETTING = (
    "Every experiment runs at `scale=cpu`: the embedded corpus (Python standard-library "
    "docstrings, byte-level vocabulary of 259 ids), batch 16 × 128 tokens, 300 steps with a "
    "30-step linear warm-up and a cosine decay to 1e-5, AdamW (β2 = 0.95, ε = 1e-8, clipping at "
    "1), qk-layernorm per head unless an arm turns it off, bfloat16 activations with float32 "
    "parameters. Independent weight decay and z-loss keep the paper's 1e-4, which over 300 "
    "steps barely act (the weights shrink by 3% in all): the default recipe here is in effect "
    "one without decay or z-loss. The experiments about them (Fig 3, E.10, and an extra arm "
    "of Fig 6) use coefficients "
    "with the paper's total over the run instead (1/30; configs/grid.py, matched_total). The model ladder is d64-L2, d128-L2 "
    "and d128-L4 (head dim 64, as in the paper). LR sensitivity uses the range [3e-3, 0.3] "
    "(see configs/grid.py for why not [3e-4, 0.3]). Each experiment's file in configs/ says "
    "what it changes from this.")


def _figure_links(doc_dir: str, figures_dir: str, experiments: Sequence[str]) -> list[str]:
  links = []
  for experiment in experiments:
    folder = os.path.join(figures_dir, experiment)
    if os.path.isdir(folder):
      for name in sorted(os.listdir(folder)):
        if name.endswith(".png"):
          links.append(os.path.relpath(os.path.join(folder, name), doc_dir))
  return links


def _timing(root: str, experiment: str) -> str:
  try:
    with open(os.path.join(root, experiment, "timing.json")) as f:
      t = json.load(f)
    return (f"{t['runs']} runs whose wall times sum to {t['train_minutes_alone']:.0f} min; "
            "one runner per core shares that among the cores")
  except (OSError, json.JSONDecodeError, KeyError):
    return "not run"


def _escape(text: str) -> str:
  return text.replace("|", "\\|").replace("\n", " ")


def _numerics_note(root: str) -> list[str]:
  """A paragraph when the runs under `root` were trained by a step that rounds differently from
  this code's (`result_format.NUMERICS`): rerunning them gives other digits, so compare verdicts."""
  summaries = []
  for experiment in sorted(os.listdir(root)) if os.path.isdir(root) else []:
    folder = os.path.join(root, experiment)
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
      try:
        summaries.append(fmt.read_json(os.path.join(folder, name, fmt.SUMMARY)) or {})
      except (OSError, ValueError):
        continue
  labels = fmt.other_numerics([s for s in summaries if s])
  if not labels:
    return []
  others = [label for label in labels if label != fmt.NUMERICS]
  which = "Some of these runs were" if fmt.NUMERICS in labels else "These runs were"
  return [f"**Rounding.** {which} trained by a train step that rounds differently from this "
          f"code's (theirs: {', '.join(others)}; this code: {fmt.NUMERICS}; "
          "docs/performance.md). Rerunning them gives other digits; compare by verdict "
          "(`python -m analysis.compare`), not digit for digit.", ""]


def _verdict_text(finding: ev.Finding, part: str | None = None) -> str:
  """'not reproduced (beyond this scale)', or the plain verdict."""
  verdict = finding.verdict if part is None else finding.parts[part]
  kind = finding.claim_kind if part is None else finding.kind(part)
  return f"{verdict} ({kind})" if kind else verdict


def _counts(found: list[tuple[claims_lib.Claim, ev.Finding]]) -> list[str]:
  """Two lines: claims and parts by verdict, with the kinds of "not reproduced"."""
  def line(label: str, items: list[tuple[str, str]]) -> str:
    cells = []
    for v in ev.VERDICTS:
      kinds = [k for verdict, k in items if verdict == v]
      if not kinds:
        continue
      split = ", ".join(f"{kinds.count(k)} {k}" for k in (ev.CONTRARY, ev.BEYOND_SCALE)
                        if kinds.count(k))
      cells.append(f"{len(kinds)} {v}" + (f" ({split})" if split else ""))
    return f"{label} {len(items)}: " + ", ".join(cells) + "."
  claims = [(f.verdict, f.claim_kind) for _, f in found]
  parts = [(v, f.kind(p)) for _, f in found for p, v in f.parts.items()]
  return [line("Claims", claims), "", line("Parts", parts)]


def _summary_table(found: list[tuple[claims_lib.Claim, ev.Finding]]) -> list[str]:
  lines = ["| # | figure | claim, then each part | verdict |", "|---|---|---|---|"]
  for claim, f in found:
    lines.append(f"| {claim.number} | {claim.figure} | **{_escape(claim.paper)}** | "
                 f"**{_verdict_text(f)}** |")
    if len(f.parts) > 1:
      lines += [f"| | | {_escape(p)} | {_verdict_text(f, p)} |" for p in f.parts]
  return lines


def _parts_list(f: ev.Finding) -> list[str]:
  out, said = [], set()
  for part in f.parts:
    why = f.causes.get(part)
    text = ("" if not why else " The same cause as above." if why in said
            else f" {why[0].upper()}{why[1:]}.")
    said.add(why)
    out.append(f"- {part}: **{_verdict_text(f, part)}**" + ("." if why else "") + text)
  return out


CRITERIA = (
    "## Criteria", "",
    "Each claim is judged part by part, by rules written down before the runs they judge "
    "were read ([docs/paper_notes.md#criteria](paper_notes.md#criteria)): a direction counts "
    "only beyond the seed spread (which also covers rounding), no criterion may hold at "
    "initialization, and a forecast must beat a naive rule. A part that is not reproduced is a "
    "*contrary finding* where the runs meet what the paper's mechanism needs, and *beyond this "
    "scale* where they do not, with the numbers that show it. A part whose effect the design "
    "cannot resolve is *not testable at this scale*.")


def _history() -> list[str]:
  lines = ["## History of verdicts", "",
           "| when | claim | part | before | after | why |", "|---|---|---|---|---|---|"]
  for c in history.CHANGES:
    lines.append(f"| {c.date} | {c.claim} | {_escape(c.part) or '(the claim)'} | {c.before} | "
                 f"{c.after} | {_escape(c.why)} |")
  return lines


def render(root: str, doc: str = "docs/reproduction.md",
           found: list[tuple[claims_lib.Claim, ev.Finding]] | None = None) -> str:
  """The page's markdown for the sweeps under `root`."""
  found = found if found is not None else claims_lib.evaluate(root)
  doc_dir = os.path.dirname(doc) or "."
  figures_dir = os.path.splitext(doc)[0]
  spread = ev.Sweeps(root).spread
  lines = [
      "# Does it reproduce the paper? (cpu scale)", "",
      f"Drawn by `python -m analysis.reproduction {root}` from the runs in `{root}/`, which "
      f"`{COMMAND}` (`make reproduce`) trains and writes. Do not edit it by hand: rerun that.", "",
      SETTING, "",
      *_numerics_note(root),
      f"Seed-to-seed spread (headline sweep, {spread.seeds} seeds): LR sensitivity "
      f"{ev.fmt(spread.sensitivity)}, final loss {ev.fmt(spread.loss)}. A direction counts as "
      "reproduced only where it exceeds these.", "",
      *_counts(found), "",
      *_summary_table(found), "",
      *CRITERIA,
  ]
  for claim, f in found:
    lines += ["", f"## {claim.number}. {claim.figure}", "",
              f"**Paper.** {claim.paper}", "",
              f"**Command.** `{COMMAND} --only={','.join(claim.sweeps)}` "
              f"({'; '.join(_timing(root, e) for e in claim.sweeps)}).", "",
              f"**Measured.** {f.ours}", "",
              f"**Verdict: {_verdict_text(f)}.**", "", *_parts_list(f)]
    if f.reason:
      lines += ["", f.reason[0].upper() + f.reason[1:] + ("" if f.reason.endswith(".") else ".")]
    links = (_figure_links(doc_dir, figures_dir, [f"claim{claim.number}"])
             + _figure_links(doc_dir, figures_dir, claim.sweeps))
    if links:
      lines += [""] + [f"![{os.path.basename(p)}]({p})" for p in links]
  lines += ["", *_history()]
  return "\n".join(lines) + "\n"


def verdict_changes(theirs_root: str, ours_root: str) -> list[str]:
  """One line per claim whose sweeps `ours_root` holds: its verdict on the runs of
  `theirs_root` (the committed reference) and on ours, and whether it moved."""
  ours = claims_lib.evaluate(ours_root)
  theirs = {claim.number: f for claim, f in claims_lib.evaluate(theirs_root)}
  lines = []
  for claim, f in ours:
    if not all(os.path.isdir(os.path.join(ours_root, e)) for e in claim.sweeps):
      continue
    before = theirs[claim.number].verdict
    moved = "same" if before == f.verdict else "MOVED"
    lines.append(f"{claim.number:>2} {claim.figure}: {before} -> {f.verdict} ({moved})")
  return lines or ["no claim has all its sweeps here"]


def _claim_figures(sweeps: ev.Sweeps) -> dict[int, dict]:
  """Per claim number: {name: function drawing a Figure}, for what the sweep figures miss."""
  from analysis import figures
  fig1 = sweeps.runs(claims_lib.FIG1)
  first = None if fig1 is None else fig1[fig1["seed"] == 0]
  out: dict[int, dict] = {}
  if first is not None:
    top = claims_lib.top_trained_lr(first)
    on = first[first["arm"] == "qkln-on"]
    out[2] = {"headline": lambda: figures.qk_layernorm_headline(first, lr=top)}
    out[11] = {"grad_rms_vs_params": lambda: figures.rms_vs(on, claims_lib.GRAD, eps=1e-8),
               "grad_rms_vs_lr": lambda: figures.rms_vs(on, claims_lib.GRAD, x="lr", eps=1e-8)}
    block = int(min(2, on["num_layers"].min() - 1))
    out[12] = {"block_out_rms_vs_lr": lambda: figures.rms_vs(
        on, f"block_out_rms/block_{block}", x="lr")}
  eps = sweeps.runs(claims_lib.FIG11)
  if eps is not None:
    arms = eps[eps["arm"].str.startswith("eps-")]
    out.setdefault(11, {})["update_rms_over_training"] = lambda: figures.metric_over_training(
        arms, claims_lib.UPDATE, title="Unscaled update RMS (block 0 MLP-in) per AdamW ε")
  fig3 = sweeps.runs(claims_lib.FIG3)
  if fig3 is not None:
    size = ev.sizes_by_params(fig3)[0]
    pair = fig3[(fig3["size"] == size) & np.isclose(fig3["lr"], claims_lib.nearest_lr(fig3, 0.1))
                & fig3["arm"].str.contains("wd-off")]  # the long pair too
    out[4] = {name: (lambda m=metric: figures.metric_over_training(pair, m, logy=False))
              for name, metric in (("log_z", "output_logit/log_z_mean"),
                                   ("mean_logit", "output_logit/mean"))}
  fig10 = sweeps.runs(claims_lib.FIG10)
  if fig10 is not None:
    out[10] = {"loss_vs_kappa": lambda: figures.loss_vs_kappa(fig10)}
  fig9 = sweeps.runs(claims_lib.FIG9)
  if fig9 is not None:
    out[9] = {"max_logit_vs_params": lambda: figures.prediction_figure(fig9)}
  return out


def draw_figures(root: str, doc: str) -> None:
  """PNG figures of every sweep under `root`, and each claim's own, next to the page."""
  from analysis import figures
  figures_dir = os.path.splitext(doc)[0]
  for experiment in sorted(os.listdir(root)):
    sweep = os.path.join(root, experiment)
    spec = results.read_json(os.path.join(sweep, "sweep.json")) if os.path.isdir(sweep) else None
    if spec and spec.get("sensitivity"):  # loss vs LR needs an LR sweep (Fig 10 has none)
      figures.make_experiment_figures(sweep, os.path.join(figures_dir, experiment), ("png",))
  for number, drawers in _claim_figures(ev.Sweeps(root)).items():
    for name, draw in drawers.items():
      try:
        figures.save(draw(), os.path.join(figures_dir, f"claim{number}", name), ("png",))
      except ValueError as e:  # nothing to draw yet
        print(f"claim {number}: figure {name} skipped: {e}")


def write(root: str, doc: str, figures: bool = True) -> str:
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", results.ProblemWarning)
    if figures:
      draw_figures(root, doc)
    text = render(root, doc)
  os.makedirs(os.path.dirname(doc) or ".", exist_ok=True)
  with open(doc, "w") as f:
    f.write(text)
  return text


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m analysis.reproduction")
  parser.add_argument("root", help="folder of sweeps, e.g. reference/cpu")
  parser.add_argument("--doc", default="docs/reproduction.md")
  parser.add_argument("--figures", default="true", choices=["true", "false"])
  args = parser.parse_args(argv)
  text = write(args.root, args.doc, args.figures == "true")
  print(text.split("\n## ")[0])
  return 0


if __name__ == "__main__":
  sys.exit(main())
