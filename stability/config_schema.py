"""The run config: every field and its default, the paper's run (paper §2.1; docs/paper_notes.md).

`default_config()` is the schema: stability/validation.py refuses any field it lacks, and
configs/base.py applies its `arg` shorthands on top of it. `config.data` holds the fields every
source shares and one group per source (`data.c4`, `data.text`, `data.embedded`, `data.tokens`,
`data.synthetic`) with that source's own; `RENAMED` maps the flat data fields of older configs
to their new place, for the message that refuses them.
"""

import ml_collections

T5_VOCAB = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
T5_EXTRA_IDS = 100  # T5: 32000 pieces + 100 sentinel ids (never produced; embedding rows)

# What a field may say. stability/validation.py refuses anything else; the model, optimizer and
# data read the same names.
QK_LAYERNORMS = ("per_head", "full_width", "off")
ATTENTIONS = ("softmax", "squared_relu", "forced")
ATTENTION_IMPLS = ("explicit", "fused", "chunked")
PARAMETRIZATIONS = ("standard", "mup_simple", "mup_intermediate", "mup_full")
REMATS = ("none", "full", "dots")
HEAD_IMPLS = ("auto", "plain", "fused")
DTYPES = ("bfloat16", "float32", "float16")
WEIGHT_DECAY_MODES = ("independent", "coupled")
LR_SCALES = ("none", "param_rms")
DECAY_MASKS = ("all", "kernels")
DATA_SOURCES = ("c4", "text", "embedded", "tokens", "synthetic")

# head_impl=auto takes the fused head from this vocabulary up: measured faster at 32,101 (CPU
# 1.69×, H100 1.22× at the same settings) and the same at 259 on CPU (docs/performance.md); the
# cut between is a choice.
FUSED_HEAD_MIN_VOCAB = 8192


def resolve_head_impl(head_impl: str, vocab_size: int) -> str:
  """`plain` or `fused`; `auto` is fused from FUSED_HEAD_MIN_VOCAB up."""
  if head_impl != "auto":
    return head_impl
  return "fused" if vocab_size >= FUSED_HEAD_MIN_VOCAB else "plain"


# Old flat field -> where it lives now (the refusal message names it).
RENAMED = {
    "data.tfds_name": "data.c4.tfds_name",
    "data.tfds_data_dir": "data.c4.tfds_data_dir",
    "data.vocab_path": "data.c4.vocab_path (data.text.vocab_path for data.source=text)",
    "data.vocab_extra_ids": "data.c4.vocab_extra_ids (data.text.vocab_extra_ids for text)",
    "data.paths": "data.text.paths",
    "data.doc_per": "data.text.doc_per",
    "data.text_vocab": "data.text.vocab",
    "data.cache_dir": "data.embedded.cache_dir",
    "data.tokens_path": "data.tokens.path",
    "data.tokens_dtype": "data.tokens.dtype",
    "data.tokens_vocab_size": "data.tokens.vocab_size",
    "data.tokens_eos_id": "data.tokens.eos_id",
    "data.eval_tokens_path": "data.tokens.eval_path",
    "data.synthetic_vocab_size": "data.synthetic.vocab_size",
}


def default_config() -> ml_collections.ConfigDict:
  """The paper's default run: d512-L6, LR 1e-2, qk-layernorm per head, C4."""
  c = ml_collections.ConfigDict()
  c.model = model_config()
  c.opt = opt_config()
  c.loss = ml_collections.ConfigDict(dict(z_loss=1e-4))
  c.data = data_config()
  c.train = train_config()
  c.mesh = mesh_config()
  return c


def renamed_message(key: str) -> str | None:
  """The refusal of an old field `key` ("data.tokens_path") naming its new place, else None."""
  new = RENAMED.get(key)
  return f"config field {key} is now {new}" if new else None


def model_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
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
                                  # | chunked (blocks of queries, scores recomputed: less memory)
      forced_kappa=1.0,          # RMS² of q and k when attention == "forced" (Fig 10)
      rope_base=10000.0,
      parametrization="standard",  # standard | mup_simple | mup_intermediate | mup_full
      mup_base_width=256,
      dtype="bfloat16",
      param_dtype="float32",
      remat="none",             # none | full | dots
      head_impl="auto",         # plain (float32 logits, then the loss) | fused (fused_head.py)
                                # | auto: fused from a vocabulary of 8,192 up
      head_chunk_tokens=2048,   # fused: tokens per chunk of logits (batch × positions)
  ))


def opt_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
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


def data_config() -> ml_collections.ConfigDict:
  """The shared fields, then one group per source (stability/data/)."""
  return ml_collections.ConfigDict(dict(
      source="c4",          # c4 | text | embedded | tokens | synthetic
      batch_size=256,       # global, in sequences
      seed=0,
      eval_batches=100,
      eval_batch_size=0,    # 0: same as batch_size
      eval_fraction=0.01,   # held-out documents (text, embedded) or tail rows (tokens)
      c4=ml_collections.ConfigDict(dict(
          tfds_name="c4/en:3.1.0",
          tfds_data_dir="",     # '' = tfds default; gs://bucket/tfds on TPU
          vocab_path=T5_VOCAB,
          vocab_extra_ids=T5_EXTRA_IDS,
      )),
      text=ml_collections.ConfigDict(dict(
          paths="",             # comma-separated globs of UTF-8 text files
          doc_per="line",       # line | file
          vocab="bytes",        # bytes (seqio.ByteVocabulary, 259 ids) | sentencepiece (vocab_path)
          vocab_path=T5_VOCAB,  # of vocab=sentencepiece
          vocab_extra_ids=T5_EXTRA_IDS,
      )),
      embedded=ml_collections.ConfigDict(dict(
          cache_dir="",         # '' = $STABILITY_CACHE or ~/.cache/stability
      )),
      tokens=ml_collections.ConfigDict(dict(
          path="",              # .npy or raw .bin of token ids
          dtype="uint16",       # of a raw .bin file
          vocab_size=0,         # 0: from `<path>.json` (stability.tools.tokenize), else max id + 1
          eos_id=-1,            # -1: from `<path>.json`, else 1
          eval_path="",         # '' = hold out the last eval_fraction of path's rows
      )),
      synthetic=ml_collections.ConfigDict(dict(
          vocab_size=32101,
      )),
  ))


def train_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
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


def mesh_config() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
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


def same_training(config: dict) -> dict:
  """`config` (as config.json holds it) with the settings that train the same model on the same
  data written one way, so that two spellings of one run compare equal (`launch.reproduce` trains
  such runs once):
  - `data.eval_batch_size` equal to `data.batch_size` is 0, its default meaning;
  - `model.qk_layernorm=full_width` with one head is `per_head`: the same LayerNorm over d_head;
  - `model.parametrization=mup_simple` at `d_model == mup_base_width` is `standard`: every LR
    multiplier is 1, and `mup_base_width` then means nothing.
  """
  out = {group: dict(fields) if isinstance(fields, dict) else fields
         for group, fields in config.items()}
  data, model = out.get("data", {}), out.get("model", {})
  if data.get("eval_batch_size") and data.get("eval_batch_size") == data.get("batch_size"):
    data["eval_batch_size"] = 0
  if model.get("qk_layernorm") == "full_width" and model.get("num_heads") == 1:
    model["qk_layernorm"] = "per_head"
  if model.get("parametrization") == "mup_simple" and model.get("d_model") == model.get(
      "mup_base_width"):
    model["parametrization"] = "standard"
  if model.get("parametrization") == "standard":
    model["mup_base_width"] = model_config().mup_base_width
  return out
