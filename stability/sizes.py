"""The model ladder (docs/paper_notes.md#model-sizes) and tiny CPU sizes.

A size is named `d{d_model}-L{num_layers}`, optionally `-h{num_heads}`; heads default to
d_model / 64 (head dim 64, docs/paper_notes.md#model). Any name of that form is accepted, so
width and depth sweeps need no table entry; the tables below are the reconstructed ladder of the
paper and the sizes that train in minutes on a laptop CPU.
"""

import re

from stability import flops

HEAD_DIM = 64

# Joint width+depth ladder of Fig 1, non-embedding params ≈ 12·L·d²
# (docs/paper_notes.md#model-sizes).
PAPER_LADDER = (
    "d256-L3",    # 2.4M  (Fig 4)
    "d512-L3",    # 9.4M  (Fig 10's "10M")
    "d512-L6",    # 18.9M
    "d768-L6",    # 42.5M
    "d768-L12",   # 84.9M
    "d1024-L12",  # 151M
    "d1024-L24",  # 302M
    "d1536-L24",  # 679M  (the ambiguous rung: 6.0e8 would be d2048-L12)
    "d2048-L24",  # 1.21B (qk-LN at LR 0.3)
    "d4096-L24",  # 4.83B (Figs 9, 12, 13)
)

# Width sweep at L=6 and depth sweep at d=512 (Fig 7).
WIDTH_SWEEP = ("d256-L6", "d512-L6", "d768-L6", "d1024-L6", "d1536-L6", "d2048-L6")
DEPTH_SWEEP = ("d512-L3", "d512-L6", "d512-L12", "d512-L24", "d512-L48")

# Sizes that train in seconds to minutes on two CPU cores.
CPU_SIZES = ("d64-L2", "d128-L2", "d128-L4", "d256-L3")

_NAME = re.compile(r"^d(\d+)-L(\d+)(?:-h(\d+))?$")


def parse(name: str) -> tuple[int, int, int]:
  """`"d512-L6"` -> (d_model, num_layers, num_heads)."""
  m = _NAME.match(name)
  if not m:
    raise ValueError(
        f"model.size={name!r} is not a size name; use d<d_model>-L<layers>[-h<heads>], "
        f"e.g. one of {', '.join(CPU_SIZES + PAPER_LADDER)}")
  d, layers = int(m.group(1)), int(m.group(2))
  heads = int(m.group(3)) if m.group(3) else max(1, d // HEAD_DIM)
  if d <= 0 or d % heads:
    raise ValueError(
        f"model.size={name!r}: d_model={d} is not divisible by num_heads={heads}; "
        f"pick d_model a multiple of {HEAD_DIM} or give -h<heads> dividing it")
  return d, layers, heads


def apply(model_cfg, name: str) -> None:
  """Sets d_model, num_layers and num_heads of a `config.model` from a size name."""
  d, layers, heads = parse(name)
  model_cfg.size = name
  model_cfg.d_model = d
  model_cfg.num_layers = layers
  model_cfg.num_heads = heads


def non_embedding_params(name: str, mlp_ratio: int = 4) -> int:
  d, layers, _ = parse(name)
  return flops.non_embedding_params(d, layers, mlp_ratio)
