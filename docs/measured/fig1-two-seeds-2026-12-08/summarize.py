"""Fig 1's two-seed design trained twice (grid-order.log, own-programs.log): each sweep's
summed run wall times and whether each run ends as its reference run does.

  python docs/measured/fig1-two-seeds-2026-12-08/summarize.py <grid-order out> <own-programs out>
"""
import glob
import json
import os
import sys

REFERENCE = "reference/cpu/fig1_qk_layernorm"


def summaries(folder):
  runs = (json.load(open(f)) for f in glob.glob(os.path.join(folder, "*", "summary.json")))
  return {s["name"]: s for s in runs}


def main():
  reference = summaries(REFERENCE)
  for label, folder in zip(("grid order", "own programs"), sys.argv[1:]):
    runs = summaries(folder)
    same = sum(s["final_eval_loss"] == reference[n]["final_eval_loss"]
               and s["status"] == reference[n]["status"] for n, s in runs.items())
    minutes = sum(s["wall_s"] for s in runs.values()) / 60
    reference_minutes = sum(reference[n]["wall_s"] for n in runs) / 60
    print(f"{label}: {len(runs)} runs, wall times summed {minutes:.1f} min (the same runs in "
          f"{REFERENCE}: {reference_minutes:.1f} min); {same} end as their reference run")


if __name__ == "__main__":
  main()
