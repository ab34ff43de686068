"""Building blocks of experiment grids: points, scales and the LR grids of the paper.

An experiment file (e.g. `configs/fig1_qk_layernorm.py`) defines

  get_grid(arg) -> Grid          every point: run name, arm, size, LR, config overrides
  get_config(arg) -> ConfigDict  one point: `scale=cpu,point=<run name>`

where `arg` carries `scale=cpu|gpu|paper` (and, for get_config, `point=`). `scale` shrinks the
grid: `cpu` trains in minutes on a laptop on the embedded corpus, `gpu` in hours on one GPU,
`paper` is the published setting (docs/paper_notes.md#scales, C4).
"""

import dataclasses
import itertools
from typing import Any, Callable

import ml_collections

from configs import base
from stability import config_schema
from stability.data import common as data_common
from stability import sizes
from stability import step_memory

SCALES = ("cpu", "gpu", "paper")

# The paper's LR grid and LR-sensitivity range (docs/paper_notes.md#lr-sensitivity).
PAPER_LRS = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
PAPER_RANGE = (3e-4, 3e-1)
# Tiny models tolerate larger LRs: the CPU grid is the paper's shifted up half a decade to 1.
CPU_LRS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)
# The cpu LR-sensitivity range. Its top is the paper's (0.3): the highest LR at which the
# qk-layernorm models of the cpu ladder still train (at LR 1 they diverge in the first steps).
# Its bottom is 3e-3, not the paper's 3e-4: 300 steps leave LRs below that under-trained in every
# arm, which adds the same constant to each arm's sensitivity and measures the run length, not
# the intervention (the paper allows shifting the range to where the optimum lies, App. B).
CPU_RANGE = (3e-3, 3e-1)

# The gpu and paper scales run on accelerators, with the settings measured fastest on an H100
# (docs/performance.md): the fused head (no [tokens × V] logits), cuDNN flash attention, no
# remat, and each step in the fewest microbatches that fit (`step_memory`), unless a point sets
# train.grad_accum itself. The cpu scale names the plain head its reference runs were made with
# (at its 259-token vocabulary the two heads time the same, and `auto` would choose it too).
ACCELERATOR_SETTINGS = {
    "model.head_impl": "fused", "model.head_chunk_tokens": 16384,
    "model.attention_impl": "fused", "model.remat": "none",
}
C4_VOCAB_SIZE = 32101  # for the memory rule; the run resolves the real one from the data

# Per scale: training length, batch and data; the defaults every experiment starts from.
SCALE_SETTINGS = {
    "cpu": {
        "data.source": "embedded", "data.batch_size": 16, "model.seq_len": 128,
        "model.head_impl": "plain",  # what the reference runs were made with
        "train.steps": 300, "opt.warmup_steps": 30, "data.eval_batches": 4,
        "train.log_every": 10, "train.eval_every": 100, "train.ckpt_every": 100,
    },
    "gpu": {
        "data.source": "c4", "data.batch_size": 64, "model.seq_len": 512,
        "train.steps": 10_000, "opt.warmup_steps": 500, "data.eval_batches": 20,
        "train.log_every": 50, "train.eval_every": 2000, "train.ckpt_every": 2000,
        **ACCELERATOR_SETTINGS,
    },
    "paper": {
        "data.source": "c4", "data.batch_size": 256, "model.seq_len": 512,
        "train.steps": 100_000, "opt.warmup_steps": 5_000, "data.eval_batches": 100,
        "train.log_every": 100, "train.eval_every": 5000, "train.ckpt_every": 5000,
        **ACCELERATOR_SETTINGS,
    },
}

SCALE_SIZES = {
    # Joint width + depth, head dim 64 as in the paper (1, 2 and 2 heads): 0.1M, 0.4M, 0.8M.
    "cpu": ("d64-L2", "d128-L2", "d128-L4"),
    "gpu": ("d256-L3", "d512-L3", "d512-L6", "d768-L6"),
    "paper": ("d512-L3", "d512-L6", "d768-L6", "d768-L12", "d1024-L12", "d1024-L24",
              "d1536-L24", "d2048-L24"),
}
# The experiments besides the headline train the two smaller cpu sizes: a third of the cost of
# the ladder, and still a comparison across sizes. At gpu and paper scale they use the ladder.
SCALE_SECONDARY_SIZES = {"cpu": SCALE_SIZES["cpu"][:2], "gpu": SCALE_SIZES["gpu"],
                         "paper": SCALE_SIZES["paper"]}
SCALE_LRS = {"cpu": CPU_LRS, "gpu": PAPER_LRS, "paper": PAPER_LRS}
SCALE_RANGE = {"cpu": CPU_RANGE, "gpu": PAPER_RANGE, "paper": PAPER_RANGE}


@dataclasses.dataclass(frozen=True)
class Point:
  """One run of a grid. `overrides` are dotted config keys applied after the scale defaults."""
  name: str
  arm: str
  size: str
  lr: float
  overrides: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Grid:
  experiment: str
  scale: str
  points: list[Point]
  figure: str = ""
  sensitivity: dict | None = None  # {"rule": ..., "ranges": [...], "arms": {arm: {...}}}
  analysis: dict | None = None  # what the experiment's claim reads besides the runs (Fig 9)

  def point(self, name: str) -> Point:
    for p in self.points:
      if p.name == name:
        return p
    raise ValueError(f"no point {name!r} in {self.experiment} at scale={self.scale}; "
                     f"points: {', '.join(p.name for p in self.points[:8])}, ...")

  def to_json(self) -> dict:
    return {"experiment": self.experiment, "scale": self.scale, "figure": self.figure,
            "sensitivity": self.sensitivity, **(self.analysis or {}),
            "points": [dataclasses.asdict(p) for p in self.points]}


def run_name(size: str, lr: float, arm: str, seed: int = 0) -> str:
  """`d256-L3_lr1e-02_qkln-off` (seed 0) or `..._seed1`: analysis recovers the arm from this
  when sweep.json is gone."""
  name = f"{size}_lr{lr:.0e}_{arm}" if arm else f"{size}_lr{lr:.0e}"
  return f"{name}_seed{seed}" if seed else name


def parse_scale_arg(arg: str | None) -> dict[str, str]:
  kv = base.parse_arg(arg)
  scale = kv.setdefault("scale", "cpu")
  if scale not in SCALES:
    raise ValueError(f"scale={scale!r}: expected one of {', '.join(SCALES)}")
  return kv


def seed_overrides(seed: int) -> dict[str, int]:
  """A replicate: its own initialization and its own data order."""
  return {"train.seed": seed, "data.seed": seed} if seed else {}


def sweep(arms: dict[str, dict[str, Any]], sizes, lrs, seeds=(0,)) -> list[Point]:
  """Every (seed, arm, size, LR) combination, seed by seed; arms map a label to its overrides."""
  return [Point(run_name(size, lr, arm, seed), arm, size, float(lr),
                {**overrides, **seed_overrides(seed)})
          for seed, (arm, overrides), size, lr in itertools.product(
              seeds, arms.items(), sizes, lrs)]


def seeds_arg(kv: dict[str, str], default=(0,)) -> tuple[int, ...]:
  """The `seeds=0+1` arg if given, else `default`."""
  return tuple(int(s) for s in kv["seeds"].split("+")) if kv.get("seeds") else tuple(default)


def config_for(point: Point, scale: str) -> ml_collections.ConfigDict:
  """The base config, then the scale's settings and microbatches, then the point's size, LR and
  overrides."""
  c = base.get_config(f"size={point.size},lr={point.lr}")
  apply_overrides(c, {**SCALE_SETTINGS[scale], **point.overrides})
  if "train.grad_accum" not in point.overrides:
    c.train.grad_accum = microbatches(c, scale)
  return c


def microbatches(c: ml_collections.ConfigDict, scale: str) -> int:
  """The scale's microbatches per step: at cpu scale a step that fits in the cache (faster, not
  needed), elsewhere the fewest that fit in an accelerator's memory."""
  if scale == "cpu":
    return step_memory.microbatches_for_cache(c.model, c.data.batch_size,
                                              data_common.BYTE_VOCAB_SIZE)
  return step_memory.microbatches_to_fit(c.model, c.data.batch_size, C4_VOCAB_SIZE)


def apply_overrides(c: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
  """Sets each dotted field ("opt.peak_lr", "data.tokens.path") to its value."""
  for key, value in overrides.items():
    node, field = _field_parent(c, key)
    if key == "model.size":
      sizes.apply(c.model, value)
    else:
      current = node[field]
      node[field] = type(current)(value) if isinstance(current, float) else value


def config_overrides_as_sets(argv: list[str]) -> list[str]:
  """`--config.x.y=v`, the override style of stability.main, as a sweep's `--set=x.y=v`."""
  return [f"--set={a[len('--config.'):]}" if a.startswith("--config.") else a for a in argv]


def _field_parent(c: ml_collections.ConfigDict, key: str) -> tuple[Any, str]:
  """(the group holding the dotted field `key`, the field's name); ValueError if there is none."""
  *groups, field = key.split(".")
  node = c
  for group in groups:
    node = node.get(group) if hasattr(node, "keys") else None
  if not groups or not hasattr(node, "keys") or field not in node or hasattr(node[field], "keys"):
    renamed = config_schema.renamed_message(key)
    raise ValueError(f"override {key!r} names no config field"
                     + (f"; {renamed}" if renamed else ""))
  return node, field


def experiment_config(get_grid: Callable[[str], Grid], arg: str | None) -> ml_collections.ConfigDict:
  """`get_config` of an experiment file: `scale=cpu,point=<run name>`."""
  kv = parse_scale_arg(arg)
  point_name = kv.pop("point", None)
  grid = get_grid(",".join(f"{k}={v}" for k, v in kv.items()))
  point = grid.point(point_name) if point_name else grid.points[0]
  return config_for(point, grid.scale)


# ---------------------------------------------------------------------------------------------
# Helpers shared by the experiment files (configs/fig*.py, configs/ablations.py)

# The next size up from a scale's ladder: the extrapolation target of Fig 9 (4.8B at paper
# scale) and the model of the AdamW ε sweep (Figs 12, 13, E.15).
SCALE_TARGET_SIZE = {"cpu": "d192-L4", "gpu": "d768-L12", "paper": "d4096-L24"}


def parse_grid_arg(arg: str | None, *keys: str) -> dict[str, str]:
  """`parse_scale_arg`, but an arg key other than scale, sizes and `keys` is an error."""
  kv = parse_scale_arg(arg)
  allowed = ("scale", "sizes", "seeds") + keys
  unknown = [k for k in kv if k not in allowed]
  if unknown:
    raise ValueError(f"unknown experiment arg {', '.join(map(repr, unknown))}; "
                     f"allowed: {', '.join(allowed)}")
  return kv


def sizes_arg(kv: dict[str, str], default) -> tuple[str, ...]:
  """The `sizes=a+b` arg if given, else `default`."""
  return tuple(kv["sizes"].split("+")) if kv.get("sizes") else tuple(default)


def single_sensitivity(scale: str) -> dict:
  """The sweep-wide LR-sensitivity rule of a scale: one range, the ends of its LR grid."""
  lo, hi = SCALE_RANGE[scale]
  return {"rule": "single", "ranges": [[lo, hi]]}


def half_decade(lr: float, up: bool) -> float:
  """The neighbour of `lr` on the 1-3-10 grid: 3e-4 -> 1e-3 (up) or 1e-4 (down)."""
  mantissa = float(f"{lr:.0e}".split("e")[0])
  factor = (10 / 3 if mantissa >= 3 else 3.0) if up else (3.0 if mantissa >= 3 else 10 / 3)
  return float(f"{(lr * factor if up else lr / factor):.0e}")


def extend_lrs(lrs, below: int = 0, above: int = 0) -> tuple[float, ...]:
  """`lrs` (a 1-3-10 grid) with `below` more points under it and `above` more over it."""
  out = [float(lr) for lr in lrs]
  for _ in range(below):
    out.insert(0, half_decade(out[0], up=False))
  for _ in range(above):
    out.append(half_decade(out[-1], up=True))
  return tuple(out)


def matched_total(scale: str, paper_value: float) -> float:
  """A per-step coefficient whose total over the scale's steps equals `paper_value`'s over the
  paper's 1e5 steps: value × 1e5 / steps. For the forces that act a little every step, weight
  decay and z-loss, what matters over a run is the total: λ = 1e-4 over 1e5 steps shrinks the
  weights by e^-10 (times the schedule's mean), while over 300 cpu steps it shrinks them by 3%,
  no decay to speak of; the matched λ over 300 steps is 1/30."""
  return paper_value * SCALE_SETTINGS["paper"]["train.steps"] / SCALE_SETTINGS[scale]["train.steps"]


def matched_decay(scale: str, factor: float = 1.0) -> float:
  """`factor` × the paper's independent weight decay 1e-4, matched in total (matched_total)."""
  return matched_total(scale, factor * 1e-4)


def scaled_steps(scale: str, key: str, factor: float) -> int:
  """`factor` times a scale's default step count (`train.steps`, `opt.warmup_steps`), >= 1."""
  return max(1, round(SCALE_SETTINGS[scale][key] * factor))


def cross_arms(*arm_sets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """Every combination of the arm sets: labels joined by `_`, overrides merged left to right."""
  out = {}
  for combo in itertools.product(*(a.items() for a in arm_sets)):
    out["_".join(label for label, _ in combo)] = {k: v for _, o in combo for k, v in o.items()}
  return out


# qk-layernorm per head (the default) vs off: the arms of Fig 1, crossed with others in Figs
# 7, 8 and E.11. The labels match fig1_qk_layernorm.py, so equal points have equal run names.
QKLN_ARMS = {
    "qkln-on": {"model.qk_layernorm": "per_head"},
    "qkln-off": {"model.qk_layernorm": "off"},
}
