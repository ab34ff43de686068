"""Paper defaults (paper §2.1; docs/paper_notes.md): one point of a grid is one of these configs.

Run one point:

  python -m stability.main --workdir=results/one \
    --config=configs/base.py:size=d512-L6,lr=1e-2,qkln=off --config.train.steps=1000

`arg` is a comma-separated list of `key=value` shorthands:

  size      a name from configs/sizes.py (d512-L6, ..., or a tiny CPU size)  [d512-L6]
  lr        peak learning rate                                             [1e-2]
  qkln      per_head | full_width | off                                    [per_head]
  data      c4 | text | embedded | tokens | synthetic                      [c4]
  param     standard | mup_simple | mup_intermediate | mup_full            [standard]

Any field can then be set with `--config.group.field=value`.
"""

import ml_collections

from configs import sizes

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
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict(dict(
      size="d512-L6",
      d_model=512,
      num_layers=6,
      num_heads=8,
      mlp_ratio=4,
      vocab_size=0,            # 0: take it from the data source's vocabulary
      seq_len=512,
      qk_layernorm="per_head",  # per_head | full_width | off
      attention="softmax",      # softmax | squared_relu | forced
      attention_impl="explicit",  # explicit (einsum) | fused (cuDNN flash attention on GPU, else XLA)
      forced_kappa=1.0,          # RMS² of q and k when attention == "forced" (Fig 10)
      rope_base=10000.0,
      parametrization="standard",  # standard | mup_simple | mup_intermediate | mup_full
      mup_base_width=256,
      dtype="bfloat16",
      param_dtype="float32",
      remat="none",             # none | full | dots
  ))

  c.opt = ml_collections.ConfigDict(dict(
      peak_lr=1e-2,
      min_lr=1e-5,
      warmup_steps=5000,
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      clip_norm=1.0,
      weight_decay=1e-4,
      weight_decay_mode="independent",  # independent | coupled
      decay_mask="all",                 # all | kernels (no embedding / LayerNorm scales)
      lr_scale="none",                  # none | param_rms (Fig E.14)
  ))

  c.loss = ml_collections.ConfigDict(dict(z_loss=1e-4))

  c.data = ml_collections.ConfigDict(dict(
      source="c4",          # c4 | text | embedded | tokens | synthetic
      batch_size=256,       # global, in sequences
      seed=0,
      eval_batches=100,
      eval_batch_size=0,    # 0: same as batch_size
      # c4
      tfds_name="c4/en:3.1.0",
      tfds_data_dir="",     # '' = tfds default; gs://bucket/tfds on TPU
      vocab_path="gs://t5-data/vocabs/cc_all.32000/sentencepiece.model",
      vocab_extra_ids=100,  # T5: 32000 pieces + 100 sentinel ids (never produced; embedding rows)
      # text
      paths="",             # comma-separated globs of UTF-8 text files
      doc_per="line",       # line | file
      text_vocab="bytes",   # bytes (seqio.ByteVocabulary, 259 ids) | sentencepiece (vocab_path)
      eval_fraction=0.01,   # held-out documents (text, embedded) or tail rows (tokens)
      # embedded
      cache_dir="",         # '' = $STABILITY_CACHE or ~/.cache/stability
      # tokens
      tokens_path="",       # .npy or raw .bin of token ids
      tokens_dtype="uint16",  # of a raw .bin file
      tokens_vocab_size=0,  # 0: from `<tokens_path>.json` (stability.tokenize), else max id + 1
      tokens_eos_id=-1,     # -1: from `<tokens_path>.json`, else 1
      eval_tokens_path="",  # '' = hold out the last eval_fraction of tokens_path's rows
      # synthetic
      synthetic_vocab_size=32101,
  ))

  c.train = ml_collections.ConfigDict(dict(
      steps=100_000,
      log_every=100,
      eval_every=5000,
      ckpt_every=5000,
      keep_ckpts=2,
      grad_accum=1,
      divergence_margin=1.0,    # diverged once train loss > ℓ0 + margin ...
      divergence_patience=5,    # ... for this many consecutive logs (or any non-finite loss)
      seed=0,
  ))

  c.mesh = ml_collections.ConfigDict(dict(
      data=-1,
      fsdp=1,
      tensor=1,
      logical_axis_rules=(
          ("batch", ("data", "fsdp")),
          ("embed", "fsdp"),
          ("heads", "tensor"),
          ("mlp", "tensor"),
          ("vocab", "tensor"),
      ),
  ))

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
