"""`make reproduce`: every experiment of the paper at `scale=cpu`, then docs/reproduction.md.

  python -m launch.reproduce [--only=fig1_qk_layernorm,fig3_output_logit_divergence]
                             [--out=results/reproduce] [--reference=results/reference/cpu]
                             [--doc=results/reproduction.md] [--train=false] [--batch=auto]
                             [--workers=auto] [--update_reference]

For each experiment, in the order of EXPERIMENTS:
  1. points that train what a finished run of an earlier experiment trained (the same config, or
     one that trains the same model on the same data: `config_schema.same_training`) are
     copied, not trained
     (the default-recipe runs are shared by most figures);
  2. the rest are trained by launch.sweep's runner: resumable, locked, a failed point recorded,
     an experiment's LRs batched into one program where `--batch` says (auto: on an accelerator,
     at small steps; never on a CPU, where it does not pay), or on a CPU by one runner per core
     side by side, each run on one core (`--workers=auto`, as reference/cpu/ was made);
  3. its runs are written, compact, to `<reference>/<experiment>/` (reference.export).
Then every claim is checked on `<reference>` and the page is redrawn (analysis.reproduction), and
each claim's verdict is set beside the committed reference runs' (reference/cpu). By default the
copies and the page go under results/: the committed reference runs and docs/reproduction.md are
only rewritten with `--update_reference` (maintainers, when the step or the experiments change).
Re-running trains only what is missing. `--train=false` only redraws the page. Each experiment
prints the minutes so far and an ETA: the runs left, weighted by their reference runs' times.
"""

import argparse
import json
import os
import shutil
import signal
import sys
import threading
import time

from etils import epath

from configs import grid as grid_lib
from launch import reference, sweep, workers
from stability import result_format as fmt
from stability import run_files


COMMITTED_REFERENCE = "reference/cpu"
COMMITTED_DOC = "docs/reproduction.md"
OWN_REFERENCE = "results/reference/cpu"  # a user's runs: the committed ones stay as they are
OWN_DOC = "results/reproduction.md"
REPO_REFERENCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                              COMMITTED_REFERENCE)


def _workers_value(value: str) -> str | int:
  """`auto` or a number of runners (argparse reports a bad one in a line)."""
  if value == "auto":
    return value
  try:
    return int(value)
  except ValueError:
    raise argparse.ArgumentTypeError("a number of runners or auto") from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m launch.reproduce", description=__doc__.split(
      "\n")[0])
  parser.add_argument("--only", default="",
                      help="experiments to run, comma-separated: names, short names (fig1 is "
                           "Fig 1 alone) or other prefixes (fig: every figure)")
  parser.add_argument("--out", default="results/reproduce", help="where the run folders go")
  parser.add_argument("--reference", default=None,
                      help=f"where compact copies go (default {OWN_REFERENCE}; "
                           f"{COMMITTED_REFERENCE} with --update_reference)")
  parser.add_argument("--doc", default=None,
                      help=f"the page ('' for none; default {OWN_DOC}, {COMMITTED_DOC} with "
                           "--update_reference)")
  parser.add_argument("--update_reference", action="store_true",
                      help=f"maintainers: rewrite the committed {COMMITTED_REFERENCE} and "
                           f"{COMMITTED_DOC} (by default both are left alone and compared with)")
  parser.add_argument("--train", default="true", choices=["true", "false"],
                      help="train missing points (false: only export and redraw the page)")
  parser.add_argument("--batch", default="auto", choices=["auto", "on", "off"],
                      help="train each experiment's LRs as vmapped groups (launch.sweep --batch)")
  parser.add_argument("--workers", default="auto", type=_workers_value,
                      help="sweep runners on disjoint CPU cores (launch/workers.py). auto: one "
                           "per core on a CPU, each run on one core, as the committed reference "
                           "runs were made (runs with more threads round differently); 1 on an "
                           "accelerator or with --batch=on")
  args = parser.parse_args(argv)
  if args.reference is None:
    args.reference = COMMITTED_REFERENCE if args.update_reference else OWN_REFERENCE
  if args.doc is None:
    args.doc = COMMITTED_DOC if args.update_reference else OWN_DOC
  return args

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: try again
# Set by SIGTERM outside a training loop (which has its own handler): stop before the next point.
STOP = threading.Event()

# (experiment file and arg): every sweep the claims read, the cheap and shared ones first.
EXPERIMENTS = (
    "configs/fig1_qk_layernorm.py:scale=cpu",
    "configs/fig10_forced_logits.py:scale=cpu",
    "configs/fig9_prediction.py:scale=cpu",
    "configs/fig11_grad_rms.py:scale=cpu",
    "configs/ablations.py:scale=cpu,ablation=e11",
    "configs/fig6_weight_decay.py:scale=cpu",
    "configs/fig7_width_depth.py:scale=cpu",
    "configs/fig5_warmup.py:scale=cpu",
    "configs/fig3_output_logit_divergence.py:scale=cpu",
    "configs/fig8_mup.py:scale=cpu",
    "configs/ablations.py:scale=cpu,ablation=e8",
    "configs/ablations.py:scale=cpu,ablation=e10",
    "configs/ablations.py:scale=cpu,ablation=e7",
    "configs/ablations.py:scale=cpu,ablation=e9",
)


def all_grids() -> list[grid_lib.Grid]:
  grids = []
  for spec in EXPERIMENTS:
    module, arg = sweep.load_experiment(spec)
    grids.append(module.get_grid(arg))
  return grids


def experiment_spec(experiment: str) -> str:
  """The EXPERIMENTS entry whose grid is named `experiment`."""
  for spec in EXPERIMENTS:
    module, arg = sweep.load_experiment(spec)
    if module.get_grid(arg).experiment == experiment:
      return spec
  raise KeyError(experiment)


def train_grid(args: argparse.Namespace, grid: grid_lib.Grid, out_dir: str) -> dict[str, int]:
  """Counts by status after training the grid: in this process, or in `--workers` runners."""
  if args.workers == 1:  # main has checked that it is at least 1
    return sweep.run_grid(grid, out_dir, batch=sweep.should_batch(args.batch, grid),
                          should_stop=STOP.is_set)
  workers.run(experiment_spec(grid.experiment), out_dir, args.workers, should_stop=STOP.is_set)
  return sweep.status_counts(grid, out_dir)


def _short(experiment: str) -> str:
  """The figure or ablation an experiment is named after: fig1_qk_layernorm -> fig1."""
  return experiment.split("_", 1)[0]


def _matches(experiment: str, name: str, names: set[str]) -> bool:
  """`name` is the experiment, its short name (fig1 is Fig 1 alone, not fig10 and fig11), or a
  prefix of it that is no experiment's whole or short name (fig: every figure)."""
  if name in names or name in {_short(n) for n in names}:
    return name in (experiment, _short(experiment))
  return experiment.startswith(name)


def select(grids: list[grid_lib.Grid], only: str) -> list[grid_lib.Grid]:
  """The grids named, short-named or prefixed in `only` (`_matches`); all when it is empty."""
  wanted = [o.strip() for o in only.split(",") if o.strip()]
  names = {g.experiment for g in grids}
  unknown = [o for o in wanted if not any(_matches(g.experiment, o, names) for g in grids)]
  if unknown:  # a usage error: one line, exit code 2
    print(f"[reproduce] error: --only: no experiment {', '.join(unknown)}; known: "
          + ", ".join(g.experiment for g in grids), file=sys.stderr)
    raise SystemExit(2)
  return [g for g in grids
          if not wanted or any(_matches(g.experiment, o, names) for o in wanted)]


def finished_runs(out: str) -> dict[str, str]:
  """{config_key: run folder} of every finished run under `out`."""
  index = {}
  for run_dir, key, summary in reference.read_runs(out):
    if summary.get("status") in fmt.FINISHED:
      index.setdefault(key, run_dir)
  return index


def point_config(grid: grid_lib.Grid, point: grid_lib.Point) -> dict:
  return json.loads(json.dumps(grid_lib.config_for(point, grid.scale).to_dict()))


def set_aside_stale_runs(grid: grid_lib.Grid, out_dir: str) -> list[str]:
  """Renames the run folders whose config.json is not their point's config any more (the
  experiment's design changed since they ran) to `<name>.stale-<time>`; they are retrained."""
  moved = []
  for point in grid.points:
    run_dir = os.path.join(out_dir, point.name)
    try:
      with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    except (OSError, json.JSONDecodeError):
      continue
    if reference.config_key(config) != reference.config_key(point_config(grid, point)):
      os.replace(run_dir, f"{run_dir}.stale-{int(time.time())}")
      moved.append(point.name)
  return moved


def reuse_shared_runs(grid: grid_lib.Grid, out_dir: str, index: dict[str, str]) -> int:
  """Copies the finished runs (all but checkpoints) that train what a point of `grid` trains
  (`reference.config_key`), over whatever partial run of that point is there, with the point's
  own config.json; a copy lands whole or not at all."""
  copied = 0
  for point in grid.points:
    target = os.path.join(out_dir, point.name)
    if sweep.point_status(epath.Path(target)) in ("done", "diverged"):
      continue
    config = point_config(grid, point)
    source = index.get(reference.config_key(config))
    if source is None or os.path.dirname(source) == out_dir:
      continue
    partial = f"{target}.copying"
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial, ignore=shutil.ignore_patterns("checkpoints", "events.*"))
    # the same training, spelled as this point spells it
    run_files.write_json_atomic(epath.Path(partial) / fmt.CONFIG, config)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    copied += 1
  return copied


def run_flops(grids: list[grid_lib.Grid]) -> dict[str, float]:
  """{config_key: training FLOPs} of each distinct run of `grids`."""
  return {reference.config_key(point_config(grid, point)): sweep.point_cost(point, grid.scale).flops
          for grid in grids for point in grid.points}


def run_costs(flops: dict[str, float], reference_s: dict[str, float]) -> dict[str, float]:
  """{config_key: cost} of each run in `flops`: the seconds its reference run took, else its
  FLOPs at the seconds per FLOP of the runs that have a reference (plain FLOPs when none has).
  Small runs cost time per step more than per FLOP, so reference seconds predict far better."""
  timed = {k for k in flops if reference_s.get(k, 0.0) > 0}
  timed_flops = sum(flops[k] for k in timed)
  s_per_flop = sum(reference_s[k] for k in timed) / timed_flops if timed_flops else 1.0
  return {k: reference_s[k] if k in timed else f * s_per_flop for k, f in flops.items()}


class Progress:
  """Minutes so far and an ETA for the whole reproduction: the runs left, each weighted by its
  reference run's time (`run_costs`), at the pace measured so far (before any: the reference
  runs' pace, their seconds shared among the `runners` that train side by side)."""

  def __init__(self, grids: list[grid_lib.Grid], out: str, reference_dir: str, runners: int = 1):
    self.out, self.runners = out, runners
    # The committed runs say which runs are long where `reference_dir` (a new one) has none.
    timed = {**reference.wall_seconds(REPO_REFERENCE), **reference.wall_seconds(reference_dir)}
    self.costs = run_costs(run_flops(grids), timed)
    self.in_seconds = any(timed.get(k, 0.0) > 0 for k in self.costs)  # else FLOPs: no unit
    self.started = time.time()
    self.total = self.left()

  def left(self) -> float:
    """The cost of the runs that no finished run under `out` has."""
    finished = finished_runs(self.out)
    return sum(cost for key, cost in self.costs.items() if key not in finished)

  def line(self) -> str:
    minutes = (time.time() - self.started) / 60
    left = self.left()
    done = self.total - left
    if done > 0 and minutes > 0:
      eta = f"ETA {left / done * minutes:.0f} min"
    elif self.in_seconds:  # nothing trained yet: the reference runs' own times
      eta = f"ETA {left / self.runners / 60:.0f} min at the reference runs' pace"
    else:
      eta = "ETA unknown"
    return f"{minutes:.1f} min so far, {left / max(self.total, 1):.0%} of the training left, {eta}"


def _finished_names(out_dir: str) -> set[str]:
  return {name for name in os.listdir(out_dir)
          if sweep.point_status(epath.Path(out_dir) / name) in fmt.FINISHED}


def run_experiment(args: argparse.Namespace, grid: grid_lib.Grid, i: int, n: int,
                   progress: Progress) -> dict[str, int]:
  """Copies shared runs, trains the rest, exports the reference; returns counts by status."""
  out_dir = os.path.join(args.out, grid.experiment)
  os.makedirs(out_dir, exist_ok=True)
  for name in set_aside_stale_runs(grid, out_dir):
    print(f"[reproduce] {grid.experiment}/{name}: its config is not the point's any more; "
          "set aside and retrained", flush=True)
  copied = reuse_shared_runs(grid, out_dir, finished_runs(args.out))
  finished_before = _finished_names(out_dir)
  print(f"[reproduce] {i}/{n} {grid.experiment} ({grid.figure}): {len(grid.points)} points, "
        f"{copied} copied from earlier experiments; {progress.line()}", flush=True)
  t0 = time.time()
  counts = {}
  if args.train == "true":
    counts = train_grid(args, grid, out_dir)
    print(f"[reproduce] {grid.experiment}: " + ", ".join(f"{v} {k}" for k, v in
                                                         sorted(counts.items()))
          + f" in {(time.time() - t0) / 60:.1f} min", flush=True)
  else:
    (epath.Path(out_dir) / "sweep.json").write_text(json.dumps(grid.to_json(), indent=1))
  written = reference.export(out_dir, os.path.join(args.reference, grid.experiment),
                             [p.name for p in grid.points])
  if _finished_names(out_dir) - finished_before:  # trained here, on this Python's corpus
    reference.write_corpus(os.path.join(args.reference, grid.experiment))
  print(f"[reproduce] {written} runs of {grid.experiment} written to "
        f"{os.path.join(args.reference, grid.experiment)}", flush=True)
  return counts


def warn_other_runs(reference_dir: str, grids: list[grid_lib.Grid]) -> None:
  """Says so, before training, when the runs in `reference_dir` trained on other text or with a
  step that rounds differently."""
  notes = [note for g in grids for check in (reference.numerics_note, reference.corpus_note)
           if (note := check(os.path.join(reference_dir, g.experiment)))]
  if notes:
    more = f" (and the same for {len(notes) - 1} more experiments)" if len(notes) > 1 else ""
    print(f"[reproduce] note: {notes[0]}{more}", flush=True)


def train_all(args: argparse.Namespace, grids: list[grid_lib.Grid]) -> bool:
  """Runs the experiments in order; False if a SIGTERM stopped them."""
  progress = Progress(grids, args.out, args.reference, args.workers)
  for i, grid in enumerate(grids, 1):
    if run_experiment(args, grid, i, len(grids), progress).get("preempted") or STOP.is_set():
      return False
  return True


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  grids = select(all_grids(), args.only)
  if args.train == "true":
    from stability import runtime
    runtime.prepare_training_process()
    try:  # fails here, not after the first experiment
      args.workers = workers.resolve(args.workers, args.batch)
    except ValueError as e:
      print(f"[reproduce] {e}", file=sys.stderr)
      return 2
    for reference_dir in dict.fromkeys([args.reference, COMMITTED_REFERENCE]):
      warn_other_runs(reference_dir, grids)
  started = time.time()
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: STOP.set())
  try:
    if not train_all(args, grids):
      print("[reproduce] preempted (SIGTERM): the same command resumes where it stopped",
            flush=True)
      return EXIT_PREEMPTED
  finally:
    signal.signal(signal.SIGTERM, previous)
  if args.doc:
    from analysis import reproduction
    reproduction.write(args.reference, args.doc)
    print(f"[reproduce] wrote {args.doc}", flush=True)
  if os.path.abspath(args.reference) != REPO_REFERENCE:
    from analysis import reproduction
    print("[reproduce] verdicts against the committed reference runs "
          f"({COMMITTED_REFERENCE}):", flush=True)
    for line in reproduction.verdict_changes(REPO_REFERENCE, args.reference):
      print(f"  {line}", flush=True)
  print(f"[reproduce] done in {(time.time() - started) / 60:.1f} min", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
