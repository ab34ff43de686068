"""Checks a run config before anything is compiled; every error names the field and the fix."""

import math

from stability import config_schema as schema


class ConfigError(ValueError):
  """A config value that cannot work. The message names the field and what is allowed."""


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, field: str, value, expected: str) -> None:
  if not ok:
    raise ConfigError(f"config.{field}={value!r} is invalid: expected {expected}")


def _one_of(cfg, group: str, name: str, allowed) -> None:
  value = cfg[group][name]
  _require(value in allowed, f"{group}.{name}", value, f"one of {', '.join(map(str, allowed))}")


def _positive(cfg, group: str, name: str, *, allow_zero: bool = False) -> None:
  value = cfg[group][name]
  ok = _is_number(value) and (value >= 0 if allow_zero else value > 0)
  _require(ok, f"{group}.{name}", value, "a number >= 0" if allow_zero else "a number > 0")


def check_known_fields(cfg, reference, path: str = "") -> None:
  """Every field of `cfg` must exist in `reference` (the schema), at every depth: catches typos
  and names the new place of a renamed field."""
  for name in cfg.keys():
    key = f"{path}.{name}" if path else name
    if name not in reference:
      renamed = schema.renamed_message(key)
      if renamed:
        raise ConfigError(renamed)
      if not path:
        raise ConfigError(f"config.{name} is not a config group; known: "
                          f"{', '.join(reference.keys())}")
      raise ConfigError(f"config.{key} is not a known field; known {path} fields: "
                        f"{', '.join(sorted(reference.keys()))}")
    if hasattr(cfg[name], "keys") and hasattr(reference[name], "keys"):
      check_known_fields(cfg[name], reference[name], key)


def validate(cfg) -> None:
  """Raises ConfigError for the first impossible value (or unknown field) in a run config."""
  check_known_fields(cfg, schema.default_config())
  _validate_model(cfg)
  _validate_opt_and_train(cfg)
  _validate_data_and_mesh(cfg)


def _validate_model(cfg) -> None:
  m = cfg.model
  for name in ("d_model", "num_heads", "mlp_ratio", "seq_len", "mup_base_width",
               "head_chunk_tokens"):
    _require(_is_int(m[name]) and m[name] > 0, f"model.{name}", m[name], "an integer > 0")
  _require(_is_int(m.num_layers) and m.num_layers >= 0, "model.num_layers",
           m.num_layers, "an integer >= 0 (0 is the bigram model)")
  _require(m.d_model % m.num_heads == 0, "model.num_heads", m.num_heads,
           f"a divisor of model.d_model={m.d_model}")
  _require((m.d_model // m.num_heads) % 2 == 0, "model.num_heads", m.num_heads,
           f"heads whose dim d_model/num_heads is even (RoPE rotates pairs); "
           f"got head dim {m.d_model / m.num_heads:g}")
  _require(_is_int(m.vocab_size) and m.vocab_size >= 0, "model.vocab_size",
           m.vocab_size, "0 (take it from the data) or the vocabulary size")
  _one_of(cfg, "model", "qk_layernorm", schema.QK_LAYERNORMS)
  _one_of(cfg, "model", "attention", schema.ATTENTIONS)
  _one_of(cfg, "model", "attention_impl", schema.ATTENTION_IMPLS)
  _one_of(cfg, "model", "parametrization", schema.PARAMETRIZATIONS)
  _one_of(cfg, "model", "remat", schema.REMATS)
  _one_of(cfg, "model", "head_impl", schema.HEAD_IMPLS)
  _one_of(cfg, "model", "dtype", schema.DTYPES)
  _one_of(cfg, "model", "param_dtype", schema.DTYPES)
  _positive(cfg, "model", "forced_kappa")
  _positive(cfg, "model", "rope_base")


def _validate_opt_and_train(cfg) -> None:
  o, t = cfg.opt, cfg.train
  _positive(cfg, "opt", "peak_lr")
  _positive(cfg, "opt", "min_lr", allow_zero=True)
  _require(o.min_lr <= o.peak_lr, "opt.min_lr", o.min_lr, f"<= opt.peak_lr={o.peak_lr}")
  for name in ("b1", "b2"):
    _require(_is_number(o[name]) and 0 <= o[name] < 1, f"opt.{name}", o[name],
             "a number in [0, 1)")
  for name in ("eps", "clip_norm", "weight_decay"):
    _positive(cfg, "opt", name, allow_zero=True)
  _one_of(cfg, "opt", "weight_decay_mode", schema.WEIGHT_DECAY_MODES)
  _one_of(cfg, "opt", "lr_scale", schema.LR_SCALES)
  _one_of(cfg, "opt", "decay_mask", schema.DECAY_MASKS)
  _positive(cfg, "loss", "z_loss", allow_zero=True)

  for name in ("steps", "log_every", "eval_every", "ckpt_every", "keep_ckpts", "grad_accum",
               "divergence_patience"):
    _require(_is_int(t[name]) and t[name] > 0, f"train.{name}", t[name], "an integer > 0")
  _require(_is_int(t.seed), "train.seed", t.seed, "an integer")
  _require(_is_int(o.warmup_steps) and 0 <= o.warmup_steps < t.steps, "opt.warmup_steps",
           o.warmup_steps, f"an integer in [0, train.steps={t.steps})")
  _positive(cfg, "train", "divergence_margin", allow_zero=True)


def _validate_data_and_mesh(cfg) -> None:
  d, t = cfg.data, cfg.train
  _one_of(cfg, "data", "source", schema.DATA_SOURCES)
  _require(_is_int(d.batch_size) and d.batch_size > 0, "data.batch_size", d.batch_size,
           "an integer > 0 (global batch, in sequences)")
  _require(d.batch_size % t.grad_accum == 0, "train.grad_accum", t.grad_accum,
           f"a divisor of data.batch_size={d.batch_size}")
  _require(_is_int(d.eval_batches) and d.eval_batches > 0, "data.eval_batches",
           d.eval_batches, "an integer > 0")

  sizes = [cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor]
  _require(all(_is_int(s) and (s > 0 or s == -1) for s in sizes) and sizes.count(-1) <= 1,
           "mesh", dict(data=sizes[0], fsdp=sizes[1], tensor=sizes[2]),
           "positive sizes for data, fsdp and tensor, at most one of them -1 (fill)")


# --- checks of what only the training path knows (the data's vocabulary, the run folder, the
# mesh), handed in as plain values so that every ConfigError is raised here -------------------


def check_vocab_size(model_vocab: int, data_vocab: int, source: str) -> None:
  """model.vocab_size is 0 (the data's) or holds every id of the data."""
  if 0 < model_vocab < data_vocab:
    raise ConfigError(
        f"config.model.vocab_size={model_vocab} is smaller than the {data_vocab} token ids of "
        f"data.source={source!r}: set it to 0 (take the data's) or to at least {data_vocab}")


def check_same_run(folder, existing: dict | None, wanted: dict) -> None:
  """A run folder holds a run of this config (its config.json `existing`), or none."""
  if existing is None or existing == wanted:
    return
  changed = sorted(
      f"{g}.{k}" for g in set(existing) | set(wanted)
      for k in set(existing.get(g, {}) or {}) | set(wanted.get(g, {}) or {})
      if (existing.get(g) or {}).get(k) != (wanted.get(g) or {}).get(k))
  raise ConfigError(
      f"workdir {folder} holds a run with a different config (differs in: "
      f"{', '.join(changed) or 'structure'}); use a new --workdir, or delete that one")


def check_one_program(distinct_keys: int, scalar_hypers) -> None:
  """The members of a batched group differ only in the optimizer scalars."""
  if distinct_keys != 1:
    raise ConfigError("batched members must differ only in "
                      + ", ".join(f"opt.{n}" for n in scalar_hypers))


def check_batch_fits_mesh(batch_size: int, grad_accum: int, data_parallel: int) -> None:
  micro = batch_size // grad_accum
  if micro % data_parallel:
    raise ConfigError(
        f"config.data.batch_size={batch_size} (per microbatch {micro} with "
        f"train.grad_accum={grad_accum}) is not divisible by the {data_parallel} data-parallel "
        "devices (mesh.data × mesh.fsdp); change the batch size or the mesh")


def check_host_shards(local_shards: int, processes: int, data_parallel: int) -> None:
  """Process p feeds rows [p·B/P, (p+1)·B/P): its devices must hold exactly those."""
  if local_shards * processes != data_parallel:
    raise ConfigError(
        f"each of the {processes} processes feeds 1/{processes} of the batch, but this one's "
        f"devices hold {local_shards} of the {data_parallel} batch shards (mesh.data × "
        "mesh.fsdp); make that product a multiple of the process count and keep mesh.tensor "
        "within one host")
