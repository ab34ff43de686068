"""Paper defaults, the size ladder, and every bad config refused with a message naming the field."""

import os
import re
import subprocess
import sys

import ml_collections
import pytest

from configs import base, grid
from stability import sizes
from stability import config_schema
from stability import validation

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_paper_defaults():
  c = base.get_config()
  assert (c.opt.b1, c.opt.b2, c.opt.eps, c.opt.clip_norm) == (0.9, 0.95, 1e-8, 1.0)
  assert (c.opt.warmup_steps, c.train.steps, c.opt.min_lr) == (5000, 100_000, 1e-5)
  assert (c.opt.weight_decay, c.opt.weight_decay_mode, c.loss.z_loss) == (1e-4, "independent", 1e-4)
  assert (c.data.batch_size, c.model.seq_len, c.model.qk_layernorm) == (256, 512, "per_head")
  assert c.model.d_model // c.model.num_heads == 64
  validation.validate(c)


def test_shorthands():
  c = base.get_config("size=d1024-L24,lr=3e-1,qkln=off,data=embedded,param=mup_simple")
  assert (c.model.d_model, c.model.num_layers, c.model.num_heads) == (1024, 24, 16)
  assert (c.opt.peak_lr, c.model.qk_layernorm, c.data.source) == (0.3, "off", "embedded")
  assert c.model.parametrization == "mup_simple"
  validation.validate(c)


def bad(mutate):
  c = base.get_config()
  mutate(c)
  return c


BAD_CONFIGS = [
    ("model.qk_layernorm", lambda c: setattr(c.model, "qk_layernorm", "sometimes")),
    ("model.attention", lambda c: setattr(c.model, "attention", "linear")),
    ("model.parametrization", lambda c: setattr(c.model, "parametrization", "mup")),
    ("model.num_heads", lambda c: setattr(c.model, "num_heads", 7)),
    ("model.num_heads", lambda c: (setattr(c.model, "d_model", 96), setattr(c.model, "num_heads", 32))),
    ("model.d_model", lambda c: setattr(c.model, "d_model", 0)),
    ("model.num_layers", lambda c: setattr(c.model, "num_layers", -1)),
    ("model.seq_len", lambda c: setattr(c.model, "seq_len", 0)),
    ("model.dtype", lambda c: setattr(c.model, "dtype", "int8")),
    ("model.remat", lambda c: setattr(c.model, "remat", "some")),
    ("opt.peak_lr", lambda c: setattr(c.opt, "peak_lr", 0.0)),
    ("opt.peak_lr", lambda c: setattr(c.opt, "peak_lr", -1e-3)),
    ("opt.peak_lr", lambda c: setattr(c.opt, "peak_lr", float("nan"))),
    ("opt.min_lr", lambda c: setattr(c.opt, "min_lr", 1.0)),
    ("opt.b2", lambda c: setattr(c.opt, "b2", 1.0)),
    ("opt.eps", lambda c: setattr(c.opt, "eps", -1e-8)),
    ("opt.weight_decay_mode", lambda c: setattr(c.opt, "weight_decay_mode", "decoupled")),
    ("opt.lr_scale", lambda c: setattr(c.opt, "lr_scale", "adafactor")),
    ("opt.warmup_steps", lambda c: setattr(c.opt, "warmup_steps", 200_000)),
    ("train.steps", lambda c: setattr(c.train, "steps", 0)),
    ("train.log_every", lambda c: setattr(c.train, "log_every", 0)),
    ("train.grad_accum", lambda c: setattr(c.train, "grad_accum", 3)),
    ("data.source", lambda c: setattr(c.data, "source", "wikipedia")),
    ("data.batch_size", lambda c: setattr(c.data, "batch_size", -4)),
    ("mesh", lambda c: (setattr(c.mesh, "data", -1), setattr(c.mesh, "fsdp", -1))),
    ("loss.z_loss", lambda c: setattr(c.loss, "z_loss", -1.0)),
]


@pytest.mark.parametrize("field,mutate", BAD_CONFIGS, ids=[f for f, _ in BAD_CONFIGS])
def test_bad_config_is_refused_naming_the_field(field, mutate):
  with pytest.raises(validation.ConfigError, match=f"config.{field}"):
    validation.validate(bad(mutate))


def test_unknown_field_is_refused():
  c = base.get_config()
  c.opt.learning_rate = 0.1  # a typo of peak_lr
  with pytest.raises(validation.ConfigError, match="config.opt.learning_rate .*peak_lr"):
    validation.check_known_fields(c, base.get_config())
  c = base.get_config()
  c.data.tokens.paht = "x"  # a typo inside a source's group
  with pytest.raises(validation.ConfigError, match="config.data.tokens.paht .*eval_path, path"):
    validation.validate(c)


def test_schema_is_the_library_default_and_groups_data_by_source():
  assert base.get_config().to_dict() == config_schema.default_config().to_dict()
  data = config_schema.default_config().data
  shared = {"source", "batch_size", "seed", "eval_batches", "eval_batch_size", "eval_fraction"}
  assert set(data.keys()) == shared | {"c4", "text", "embedded", "tokens", "synthetic"}
  assert (data.c4.vocab_extra_ids, data.synthetic.vocab_size, data.tokens.eos_id) == (
      100, 32101, -1)
  assert data.text.vocab_path == data.c4.vocab_path  # as before, when text shared the field


@pytest.mark.parametrize("old,new", [
    ("tokens_path", "data.tokens.path"), ("synthetic_vocab_size", "data.synthetic.vocab_size"),
    ("text_vocab", "data.text.vocab"), ("vocab_path", "data.c4.vocab_path"),
    ("cache_dir", "data.embedded.cache_dir"), ("eval_tokens_path", "data.tokens.eval_path")])
def test_old_flat_data_field_is_refused_naming_the_new_one(old, new):
  c = base.get_config()
  c.data[old] = "x"
  with pytest.raises(validation.ConfigError, match=rf"data\.{old} is now {re.escape(new)}"):
    validation.validate(c)
  with pytest.raises(ValueError, match=rf"data\.{old} is now {re.escape(new)}"):
    grid.apply_overrides(base.get_config(), {f"data.{old}": "x"})


def test_old_flat_data_field_on_the_command_line_is_refused(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "stability.main", "--config=configs/base.py:data=tokens",
       f"--workdir={tmp_path / 'run'}", "--config.data.tokens_path=x.npy"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert "data.tokens_path is now data.tokens.path" in result.stderr, result.stderr[-2000:]
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("arg,match", [
    ("size=d500-L6", "not divisible"),
    ("size=big", "not a size name"),
    ("depth=3", "unknown config arg 'depth'"),
    ("lr", "not key=value"),
])
def test_bad_arg_is_refused(arg, match):
  with pytest.raises(ValueError, match=match):
    base.get_config(arg)


def test_wrong_type_is_refused_by_ml_collections():
  c = base.get_config()
  with pytest.raises(TypeError):
    c.opt.peak_lr = "fast"


def test_size_names():
  assert sizes.parse("d512-L6") == (512, 6, 8)
  assert sizes.parse("d128-L2-h4") == (128, 2, 4)
  assert sizes.parse("d64-L2") == (64, 2, 1)
