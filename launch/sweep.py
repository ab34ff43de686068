"""Runs every point of an experiment's grid; safe to re-run, safe to run twice at once.

  python -m launch.sweep --experiment=configs/fig1_qk_layernorm.py:scale=cpu --out=results/fig1
  python -m launch.sweep --experiment=configs/fig1_qk_layernorm.py:scale=paper --dry_run \
      --device=H100 --mfu=0.4

- Finished points (status done or diverged) are skipped; interrupted ones resume from their
  checkpoint; a failed point is recorded and the grid goes on.
- A lock file per point (`<out>/.locks/<name>.lock`) keeps two runners off one point: start
  several runners on one sweep (here, or on several machines sharing the folder) and together they
  finish it. A lock left by a dead process on this host is taken over. `--workers=N` starts N
  runners here itself, each on its own CPU cores (launch/workers.py).
- Every point's config is built and validated first, `--dry_run` included: a bad experiment
  argument or `--set` stops the sweep with one line (exit 2) before anything trains.
- `--dry_run` lists the points with tokens, FLOPs and estimated accelerator-hours.
"""

import collections
import dataclasses
import importlib.util
import json
import os
import re
import signal
import socket
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging
from etils import epath

import configs
from configs import grid as grid_lib
from stability import data as data_lib
from stability import flops
from stability import result_format as fmt



_EXPERIMENT = flags.DEFINE_string(
    "experiment", None,
    "experiment config file and arg: configs/<file>.py:scale=cpu|gpu|paper[,seeds=0+1][,sizes=...]"
    " (every file also takes the arguments its docstring lists). The experiments:\n"
    + configs.experiment_list())
_OUT = flags.DEFINE_string("out", None, "sweep folder (default results/<experiment>)")
_VERBOSE = flags.DEFINE_bool("verbose", False, "on a bad experiment or --set, the whole traceback")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "list the points and their cost; train nothing")
_ONLY = flags.DEFINE_string("only", "", "run only points whose name matches this regex")
_DEVICE = flags.DEFINE_string("device", "H100", "accelerator for --dry_run hour estimates")
_MFU = flags.DEFINE_float("mfu", 0.4, "assumed model FLOP utilisation for --dry_run")
_BATCH = flags.DEFINE_enum(
    "batch", "auto", ["auto", "on", "off"],
    "on: train points that differ only in scalar optimizer hyper-parameters (LR, ε, weight decay, "
    "...) as one vmapped program (stability/run.py). auto: on for small steps on an accelerator "
    "(measured 1.7× faster on an H100 at 16×128 tokens), off on a CPU (no faster) and for large "
    "steps (9-12% slower on an H100 at 256×512 tokens; docs/performance.md)")
# --batch=auto groups runs whose steps hold at most this many tokens (between the 2,048 measured
# to gain and the 131,072 measured to lose on an H100: a choice, not a measurement).
BATCH_AUTO_MAX_TOKENS = 16_384
_WORKERS = flags.DEFINE_string(
    "workers", "1", "runners on disjoint CPU cores at once (launch/workers.py; CPU only). auto: "
    "one per core, each run on one core, as reference/cpu/ was made (runs with more threads "
    "round differently)")
_RUNNER = flags.DEFINE_string(
    "runner", "0/1", "k/n: this is runner k of n sharing the sweep folder (launch/workers.py sets "
    "it); runners begin on different compiled programs (walk_order)")
_SET = flags.DEFINE_multi_string(
    "set", [], "extra override for every point, e.g. --set=train.steps=100 (or, as stability.main "
    "takes them, --config.train.steps=100)")


def load_experiment(spec: str):
  """`configs/x.py:arg` -> (module, arg)."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path):
    raise ValueError(f"--experiment: no file {path!r}")
  name = os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(f"experiment_{name}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_grid"):
    raise ValueError(f"{path} defines no get_grid(arg)")
  return module, arg


def parse_sets(sets: list[str]) -> dict[str, object]:
  out = {}
  for item in sets:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--set={item!r} is not key=value")
    try:
      out[key] = json.loads(value)
    except json.JSONDecodeError:
      out[key] = value
  return out


def with_extra_overrides(grid: grid_lib.Grid, extra: dict) -> grid_lib.Grid:
  if not extra:
    return grid
  points = [dataclasses.replace(p, overrides={**p.overrides, **extra}) for p in grid.points]
  return dataclasses.replace(grid, points=points)


@dataclasses.dataclass
class Cost:
  tokens: float
  flops: float


def point_cost(point: grid_lib.Point, scale: str, vocab_size: int = 32101) -> Cost:
  c = grid_lib.config_for(point, scale)
  tokens = float(c.train.steps * c.data.batch_size * c.model.seq_len)
  vocab = c.model.vocab_size or data_lib.source_for(c.data).known_vocab_size or vocab_size
  return Cost(tokens, tokens * flops.model_flops_per_token(c.model, vocab))


def checked_grid(experiment: str, sets: list[str]) -> grid_lib.Grid:
  """The grid of `--experiment` with `--set` applied, every point's config built and validated;
  ValueError (one line) for a missing file, a bad argument, override or value."""
  module, arg = load_experiment(experiment)
  try:
    grid = with_extra_overrides(module.get_grid(arg), parse_sets(sets))
  except (KeyError, TypeError) as e:
    raise ValueError(f"{experiment}: {e}") from None
  check_grid(grid)
  return grid


def check_grid(grid: grid_lib.Grid) -> None:
  """Builds and validates every point's config (the experiment's values and --set's) before
  anything is trained or priced; raises ValueError naming the first bad point."""
  from stability import validation  # no JAX program is built
  for point in grid.points:
    try:
      validation.validate(grid_lib.config_for(point, grid.scale))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"point {point.name}: {e}") from None


def selected(grid: grid_lib.Grid, only: str = "") -> list[grid_lib.Point]:
  """The grid's points whose name matches the regex `only` (every point for "")."""
  return [p for p in grid.points if re.search(only, p.name)]


def dry_run(grid: grid_lib.Grid, device: str, mfu: float, only: str = "") -> str:
  """The points (those whose name matches `only`) with their cost, and the total."""
  peak = flops.peak_flops_per_device(device) if device.lower() != "cpu" else None
  points = selected(grid, only)
  lines = [f"{grid.experiment} at scale={grid.scale}: {len(points)} points "
           f"({grid.figure})", f"{'point':44s} {'arm':18s} {'size':10s} {'lr':>8s} "
           f"{'N':>9s} {'tokens':>9s} {'FLOPs':>9s} {'hours':>8s}"]
  total_flops = total_tokens = 0.0
  for p in points:
    cost = point_cost(p, grid.scale)
    total_flops += cost.flops
    total_tokens += cost.tokens
    hours = cost.flops / (peak * mfu) / 3600 if peak else float("nan")
    n = grid_lib.sizes.non_embedding_params(p.size)
    lines.append(f"{p.name:44s} {p.arm:18s} {p.size:10s} {p.lr:8.0e} {n:9.2e} "
                 f"{cost.tokens:9.2e} {cost.flops:9.2e} {hours:8.1f}")
  hours = total_flops / (peak * mfu) / 3600 if peak else float("nan")
  lines.append(f"total: {total_tokens:.3g} tokens, {total_flops:.3g} FLOPs, "
               f"{hours:,.1f} {device}-hours at {mfu:.0%} MFU"
               + ("" if peak else f" (no peak FLOP/s known for {device!r})"))
  return "\n".join(lines)


class PointLock:
  """An exclusive lock file per point (O_EXCL create); stale locks of dead local pids are taken."""

  def __init__(self, lock_dir: epath.Path, name: str):
    self.path = os.path.join(os.fspath(lock_dir), f"{name}.lock")

  def acquire(self) -> bool:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    for _ in range(2):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        if self._stale():
          try:
            os.remove(self.path)
          except FileNotFoundError:
            pass
          continue
        return False
      with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}, f)
      return True
    return False

  def _stale(self) -> bool:
    try:
      with open(self.path) as f:
        owner = json.load(f)
    except (OSError, json.JSONDecodeError):
      return time.time() - os.path.getmtime(self.path) > 60 if os.path.exists(self.path) else True
    if owner.get("host") != socket.gethostname():
      return False
    try:
      os.kill(int(owner["pid"]), 0)
      return False
    except ProcessLookupError:
      return True
    except PermissionError:
      return False

  def release(self) -> None:
    try:
      os.remove(self.path)
    except FileNotFoundError:
      pass

  def clear_if_stale(self) -> None:
    """Removes a dead runner's lock: one killed after its point finished, before it unlocked."""
    if self._stale():  # also true when there is no lock
      self.release()


def point_status(run_dir: epath.Path) -> str | None:
  try:
    return (fmt.read_json(run_dir / fmt.SUMMARY) or {}).get("status")
  except ValueError:  # torn by a kill
    return None


def should_batch(mode: str, grid: grid_lib.Grid) -> bool:
  """--batch: on, off, or auto (an accelerator, and every step ≤ BATCH_AUTO_MAX_TOKENS)."""
  if mode != "auto":
    return mode == "on"
  import jax
  if jax.default_backend() == "cpu":
    return False
  configs = [grid_lib.config_for(p, grid.scale) for p in grid.points]
  return all(c.data.batch_size * c.model.seq_len <= BATCH_AUTO_MAX_TOKENS for c in configs)


def batch_groups(points, scale: str, batch: bool) -> list[list[grid_lib.Point]]:
  """Points grouped by everything but their scalar optimizer hyper-parameters."""
  if not batch:
    return [[p] for p in points]
  from stability import run as run_lib
  groups: dict[str, list[grid_lib.Point]] = {}
  for p in points:
    groups.setdefault(run_lib.batchable_key(grid_lib.config_for(p, scale)), []).append(p)
  return list(groups.values())


class Tally:
  """Counts of points by status, and the progress line with an ETA from the points trained:
  those unfinished when the grid started, less those this runner has passed (trained, or found
  finished or held by another runner since), shared among the `runners`."""

  def __init__(self, total: int, unfinished: set[str], runners: int = 1):
    self.counts: collections.Counter[str] = collections.Counter()
    self.total = total
    self.runners = runners
    self.unfinished = set(unfinished)
    self.done = 0
    self.trained_s: list[float] = []  # per point

  def add(self, status: str, name: str | None = None, done: bool = True) -> None:
    """Counts a point (`name`: it is no longer left to train here)."""
    self.counts[status] += 1
    self.done += done
    self.unfinished.discard(name)

  def trained(self, points, statuses: list[str], seconds: float) -> None:
    for point, status in zip(points, statuses):
      self.add(status, point.name)
    self.trained_s.append(seconds / len(points))
    left = len(self.unfinished)
    eta = sum(self.trained_s) / len(self.trained_s) * left / self.runners / 60
    names = (points[0].name if len(points) == 1
             else f"{len(points)} points batched ({points[0].name}, ...)")
    print(f"[sweep] {self.done}/{self.total} {names}: {', '.join(sorted(set(statuses)))} in "
          f"{seconds:.0f}s; ETA {eta:.1f} min for {left} more to train", flush=True)


def claim_points(group, out_dir: epath.Path, tally: Tally):
  """(points to train, their locks, whether another runner holds one of the group)."""
  todo, locks, locked = [], [], False
  for point in group:
    lock = PointLock(out_dir / ".locks", point.name)
    if (status := point_status(out_dir / point.name)) in fmt.FINISHED:
      lock.clear_if_stale()
      tally.add(status, point.name)
    elif not lock.acquire():
      logging.info("%s is being run by another runner; skipping", point.name)
      tally.add("locked", point.name)
      locked = True
    elif (status := point_status(out_dir / point.name)) in fmt.FINISHED:  # finished meanwhile
      lock.release()
      tally.add(status, point.name)
    else:
      todo.append(point)
      locks.append(lock)
  return todo, locks, locked


def train_points(todo, group, locked: bool, out_dir: epath.Path, scale: str) -> list[str]:
  """Trains `todo` (one run, or a batched group); returns their statuses, `failed` on an error."""
  from stability import train  # jax and friends: not needed for --dry_run
  whole = len(group) > len(todo) and not locked and train.resumes_as_group(
      [os.fspath(out_dir / p.name) for p in group])
  members = group if whole else todo
  dirs = [os.fspath(out_dir / p.name) for p in members]
  configs = [grid_lib.config_for(p, scale) for p in members]
  try:
    if len(members) == 1:
      summaries = [train.train_and_evaluate(configs[0], dirs[0])]
    else:
      summaries = train.train_batched(configs, dirs)
    return [s["status"] for p, s in zip(members, summaries) if p in todo]
  except Exception as e:  # a failed point never stops the grid
    logging.exception("%s failed: %s", ", ".join(p.name for p in todo), e)
    return ["failed"] * len(todo)


def parse_runner(value: str) -> tuple[int, int]:
  """(k, n) from `--runner=k/n`; ValueError unless 0 <= k < n."""
  try:
    runner, runners = (int(x) for x in value.split("/"))
  except ValueError:
    raise ValueError(f"--runner={value}: expected k/n, e.g. 0/2") from None
  if not 0 <= runner < runners:
    raise ValueError(f"--runner={value}: k must be from 0 to n-1")
  return runner, runners


def walk_order(points: list[grid_lib.Point], runner: int = 0,
               runners: int = 1) -> list[grid_lib.Point]:
  """The order in which runner `runner` of `runners` claims points. One runner: the grid's own.
  Several: the points of one arm and size (one compiled program; LRs and seeds are its
  arguments) together, and each runner starting at its own share of those programs, so that
  each program is compiled by one runner and found in the compilation cache by the others,
  rather than compiled by all of them at the same moment."""
  if runners == 1:
    return list(points)
  programs = list(dict.fromkeys((p.arm, p.size) for p in points))
  start = runner * len(programs) // runners
  rank = {program: (i - start) % len(programs) for i, program in enumerate(programs)}
  return sorted(points, key=lambda p: rank[(p.arm, p.size)])


def run_grid(grid: grid_lib.Grid, out: str, only: str = "", batch: bool = False,
             should_stop=lambda: False, runner: tuple[int, int] = (0, 1)) -> dict[str, int]:
  """Trains every unfinished point it can lock, in `walk_order` for runner k of n; returns
  counts by final status.

  `should_stop()` is asked before each point: True ends the grid there, counted `preempted`.
  """
  out_dir = epath.Path(out)
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / "sweep.json").write_text(json.dumps(grid.to_json(), indent=1))
  points = walk_order(selected(grid, only), *runner)
  tally = Tally(len(points), {p.name for p in points
                              if point_status(out_dir / p.name) not in fmt.FINISHED}, runner[1])
  for group in batch_groups(points, grid.scale, batch):
    if should_stop():
      tally.add("preempted", done=False)
      break
    todo, locks, locked = claim_points(group, out_dir, tally)
    if not todo:
      continue
    start = time.time()
    try:
      statuses = train_points(todo, group, locked, out_dir, grid.scale)
    finally:
      for lock in locks:
        lock.release()
    tally.trained(todo, statuses, time.time() - start)
    if "preempted" in statuses:
      break
  return dict(tally.counts)


def status_counts(grid: grid_lib.Grid, out: str, only: str = "") -> dict[str, int]:
  """Points by status as their folders say (`unfinished` where there is no summary yet)."""
  return dict(collections.Counter(point_status(epath.Path(out) / p.name) or "unfinished"
                                  for p in selected(grid, only)))


def runner_count(requested: str, batch: str) -> int:
  """The runners `--workers` asks for, checked against these CPUs and `--batch` (a UsageError)."""
  from launch import workers
  try:
    return workers.resolve(requested, batch)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def run_workers(experiment: str, out: str, count: int, only: str = "",
                sets: tuple[str, ...] = ()) -> None:
  """`count` runners on their own cores (launch/workers.py); a SIGTERM here stops them too."""
  from launch import workers
  stop = threading.Event()
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
  try:
    workers.run(experiment, out, count, only, sets, should_stop=stop.is_set)
  finally:
    signal.signal(signal.SIGTERM, previous)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _EXPERIMENT.value:
    raise app.UsageError("--experiment=configs/<file>.py[:scale=cpu] is required")
  try:
    grid = checked_grid(_EXPERIMENT.value, _SET.value)
    runner = parse_runner(_RUNNER.value)
  except ValueError as e:  # one line, before anything is spent
    if _VERBOSE.value:
      raise
    print(f"launch.sweep: error: {e}", file=sys.stderr)
    sys.exit(2)
  if _DRY_RUN.value:
    print(dry_run(grid, _DEVICE.value, _MFU.value, _ONLY.value))
    return
  out = _OUT.value or os.path.join("results", grid.experiment)
  from stability import runtime
  runtime.prepare_training_process()
  count = runner_count(_WORKERS.value, _BATCH.value)
  if count != 1:
    run_workers(_EXPERIMENT.value, out, count, _ONLY.value, tuple(_SET.value))
    counts = status_counts(grid, out, _ONLY.value)
  else:
    counts = run_grid(grid, out, _ONLY.value, batch=should_batch(_BATCH.value, grid),
                      runner=runner)
  print(f"[sweep] {out}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
  sys.exit(1 if counts.get("failed") else 0)


if __name__ == "__main__":
  app.run(main, argv=grid_lib.config_overrides_as_sets(sys.argv))
