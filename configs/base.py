"""Paper defaults (paper §2.1; docs/paper_notes.md): one point of a grid is one of these configs.

Run one point:

  python -m stability.main --workdir=results/one \
    --config=configs/base.py:size=d512-L6,lr=1e-2,qkln=off --config.train.steps=1000

`arg` is a comma-separated list of `key=value` shorthands:

  size      a name from stability/sizes.py (d512-L6, ..., or a tiny CPU size)  [d512-L6]
  lr        peak learning rate                                             [1e-2]
  qkln      per_head | full_width | off                                    [per_head]
  data      c4 | text | embedded | tokens | synthetic                      [c4]
  param     standard | mup_simple | mup_intermediate | mup_full            [standard]

Any field can then be set with `--config.group.field=value`, a data source's own fields with
`--config.data.<source>.field=value` (e.g. `--config.data.tokens.path=...`). Every field and its
default: stability/config_schema.py.
"""

import ml_collections

from stability import config_schema
from stability import sizes

SHORTHANDS = ("size", "lr", "qkln", "data", "param")


def parse_arg(arg: str | None) -> dict[str, str]:
  """`"size=d256-L3,lr=1e-2"` -> `{"size": "d256-L3", "lr": "1e-2"}`."""
  out = {}
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    if "=" not in item:
      raise ValueError(
          f"config arg item {item!r} is not key=value; expected e.g. 'size=d512-L6,lr=1e-2'")
    key, value = item.split("=", 1)
    out[key.strip()] = value.strip()
  return out


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The paper's default run (paper §2.1), with shorthands from `arg` applied."""
  c = config_schema.default_config()
  apply_shorthands(c, parse_arg(arg))
  return c


def apply_shorthands(c: ml_collections.ConfigDict, kv: dict[str, str]) -> None:
  """Applies the `arg` shorthands; unknown keys fail with the allowed ones."""
  for key in kv:
    if key not in SHORTHANDS:
      raise ValueError(f"unknown config arg {key!r}; allowed: {', '.join(SHORTHANDS)}")
  if "size" in kv:
    sizes.apply(c.model, kv["size"])
  if "lr" in kv:
    c.opt.peak_lr = float(kv["lr"])
  if "qkln" in kv:
    c.model.qk_layernorm = kv["qkln"]
  if "data" in kv:
    c.data.source = kv["data"]
  if "param" in kv:
    c.model.parametrization = kv["param"]
