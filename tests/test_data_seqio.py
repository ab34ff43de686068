"""The seqio sources: user text files and C4 (on tfds.testing.mock_data), with TensorFlow."""

import collections
import io
import itertools
import json
import os
import re
import string
import textwrap

import numpy as np
import pytest

from configs import base
from stability import data
from stability.data import common as data_common
from stability.data import seqio as data_seqio
from stability.data.common import DataError
from stability.tools import tokenize

tf = pytest.importorskip("tensorflow")
seqio = pytest.importorskip("seqio")
tfds = pytest.importorskip("tensorflow_datasets")
spm = pytest.importorskip("sentencepiece")

SEQ_LEN = 64
TEXT_SEQ_LEN = 256  # bytes: rows that hold a few whole lines
C4 = "c4/en:3.1.0"


def make_cfg(source: str, **fields):
  """The data config of `source`; a field it shares with every source is set on `data`, any
  other on the source's own group `data.<source>`."""
  cfg = base.get_config(f"data={source}").data
  cfg.update(dict(batch_size=4, eval_batches=2, eval_batch_size=0, seed=0))
  for name, value in fields.items():
    (cfg if name in cfg else cfg[source])[name] = value
  return cfg


def take(iterator, n: int) -> list[np.ndarray]:
  return [next(iterator) for _ in range(n)]


def sentences(*modules) -> list[str]:
  """Sentences of a few module docstrings: short documents of real prose."""
  text = " ".join(" ".join(m.__doc__.split()) for m in modules)
  return [s.strip() + "." for s in text.split(". ") if len(s.split()) >= 4]


TRAIN_DOCS = sentences(re, json)
VALIDATION_DOCS = sentences(os, string, textwrap, collections, itertools)


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory) -> str:
  """A tiny SentencePiece model trained here on a few KB of text (pad 0, eos 1, unk 2)."""
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(TRAIN_DOCS + VALIDATION_DOCS), model_writer=model, vocab_size=200,
      hard_vocab_limit=False, model_type="unigram", character_coverage=1.0, pad_id=0, eos_id=1,
      unk_id=2, bos_id=-1, minloglevel=2)
  path = tmp_path_factory.mktemp("sp") / "tiny.model"
  path.write_bytes(model.getvalue())
  return str(path)


def sp_encode(path: str, text: str) -> list[int]:
  return spm.SentencePieceProcessor(model_file=path).encode(text)


def segments(rows: np.ndarray, eos: int) -> list[list[int]]:
  """The complete documents inside packed rows (between two EOS of one row)."""
  found = []
  for row in rows.tolist():
    ends = [i for i, t in enumerate(row) if t == eos]
    found += [row[a + 1:b] for a, b in zip(ends, ends[1:])]
  return found


def test_byte_ids_equal_seqio_byte_vocabulary():
  vocab = seqio.ByteVocabulary()
  assert (vocab.vocab_size, vocab.eos_id, vocab.pad_id) == (data_common.BYTE_VOCAB_SIZE, 1, 0)
  for text in ["hello", "héllo wörld ✓ 日本語 🙂", "a\x00b\n\ttab", "", TRAIN_DOCS[0]]:
    np.testing.assert_array_equal(data_common.byte_encode(text), vocab.encode(text))
    np.testing.assert_array_equal(data_common.byte_encode(text),
                                  vocab.encode_tf(tf.constant(text)).numpy())
    assert data_common.byte_decode(vocab.encode(text)) == vocab.decode(vocab.encode(text))


# --- text -------------------------------------------------------------------------------------


@pytest.fixture
def text_corpus(tmp_path) -> tuple[str, list[str]]:
  """Two UTF-8 files, one document per non-blank line."""
  lines = [f"{i}: {doc}" for i, doc in enumerate(TRAIN_DOCS + VALIDATION_DOCS)]
  half = len(lines) // 2
  (tmp_path / "a.txt").write_text("\n".join(lines[:half]) + "\n\n   \n", encoding="utf-8")
  (tmp_path / "b.txt").write_text("\n".join(lines[half:]), encoding="utf-8")
  return str(tmp_path / "*.txt"), lines


def test_text_rows_pack_the_lines_and_hold_out_by_index(text_corpus):
  paths, lines = text_corpus
  cfg = make_cfg("text", paths=paths, eval_fraction=0.2, eval_batch_size=2)
  source = data.source_for(cfg)
  assert (source.vocab_size, source.eos_id, source.known_vocab_size) == (259, 1, 259)
  held_out = [line for i, line in enumerate(lines) if data_common.is_heldout(i, 0.2)]
  train_lines = {line for line in lines if line not in held_out}
  batches = np.concatenate(take(data.make_train_iterator(cfg, TEXT_SEQ_LEN), 20))
  assert batches.shape == (80, TEXT_SEQ_LEN + 1) and (batches != 0).all()
  docs = [data_common.byte_decode(seg) for seg in segments(batches, 1)]
  assert docs and all(doc in train_lines for doc in docs)
  eval_rows = np.concatenate(data.make_eval_batches(cfg, TEXT_SEQ_LEN))
  stream = data_common.byte_encode_documents(held_out)
  np.testing.assert_array_equal(eval_rows.ravel(), stream[:eval_rows.size])


def test_text_order_resume_and_hosts(text_corpus):
  cfg = make_cfg("text", paths=text_corpus[0])
  iterator = data.make_train_iterator(cfg, TEXT_SEQ_LEN)
  first = take(iterator, 5)
  state = iterator.get_state()
  expected = take(iterator, 30)  # crosses an epoch
  restored = data.make_train_iterator(cfg, TEXT_SEQ_LEN)
  restored.set_state(json.loads(json.dumps(state)))
  np.testing.assert_array_equal(np.stack(take(restored, 30)), np.stack(expected))
  np.testing.assert_array_equal(np.stack(take(data.make_train_iterator(cfg, TEXT_SEQ_LEN), 5)),
                                np.stack(first))
  cfg.seed = 1
  assert not np.array_equal(np.stack(take(data.make_train_iterator(cfg, TEXT_SEQ_LEN), 5)),
                            np.stack(first))
  cfg.seed = 0
  hosts = [next(data.make_train_iterator(cfg, TEXT_SEQ_LEN, process_index=p, process_count=2))
           for p in range(2)]
  np.testing.assert_array_equal(np.concatenate(hosts), first[0])


def test_text_documents_per_file_with_sentencepiece(tmp_path, sp_model):
  for i, doc in enumerate(TRAIN_DOCS):
    (tmp_path / f"doc{i:03d}.txt").write_text(doc, encoding="utf-8")
  cfg = make_cfg("text", paths=str(tmp_path / "doc*.txt"), doc_per="file",
                 vocab="sentencepiece", vocab_path=sp_model, vocab_extra_ids=0,
                 eval_fraction=0.0)
  processor = spm.SentencePieceProcessor(model_file=sp_model)
  source = data.source_for(cfg)
  assert isinstance(source, data_seqio.TextSource)
  assert (source.vocab_size, source.eos_id) == (processor.vocab_size(), processor.eos_id())
  assert source.known_vocab_size is None
  assert data.vocab_size(dict_update(cfg, vocab_extra_ids=100)) == data.vocab_size(cfg) + 100
  batches = np.concatenate(take(data.make_train_iterator(cfg, SEQ_LEN), 10))
  encoded = {tuple(sp_encode(sp_model, doc)) for doc in TRAIN_DOCS}
  found = segments(batches, data.eos_id(cfg))
  assert found and all(tuple(seg) in encoded for seg in found)


def dict_update(cfg, **fields):
  cfg = cfg.copy_and_resolve_references()
  cfg[cfg.source].update(fields)
  return cfg


def test_text_bad_inputs(tmp_path, sp_model):
  with pytest.raises(DataError, match="matches no files"):
    data.validate(make_cfg("text", paths=str(tmp_path / "none*.txt")), SEQ_LEN)
  with pytest.raises(DataError, match="needs --config.data.text.paths"):
    data.validate(make_cfg("text", paths=""), SEQ_LEN)
  (tmp_path / "blank.txt").write_text("\n  \n\n")
  with pytest.raises(DataError, match="corpus is empty"):
    data.make_train_iterator(make_cfg("text", paths=str(tmp_path / "blank.txt")), SEQ_LEN)
  (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
  with pytest.raises(DataError, match=r"latin1.txt is not valid UTF-8 \(byte 3"):
    data.make_train_iterator(make_cfg("text", paths=str(tmp_path / "*.txt")), SEQ_LEN)
  with pytest.raises(DataError, match="data.text.doc_per='page'"):
    data.validate(make_cfg("text", paths=str(tmp_path / "blank.txt"), doc_per="page"), SEQ_LEN)
  (tmp_path / "bad.model").write_bytes(b"this is not a sentencepiece model")
  for vocab, message in [("missing.model", "cannot read the vocabulary"),
                         ("bad.model", "not a loadable SentencePiece model")]:
    cfg = make_cfg("text", paths=str(tmp_path / "blank.txt"), vocab="sentencepiece",
                   vocab_path=str(tmp_path / vocab))
    with pytest.raises(DataError, match=f"{message}.*--config.data.text.vocab_path"):
      data.validate(cfg, SEQ_LEN)


# --- C4 on mock data --------------------------------------------------------------------------


def fake_c4(self, split, decoders=None, read_config=None, shuffle_files=False, **kwargs):
  """Replaces tfds' reading of c4/en: real text, different documents per split."""
  del self, decoders, read_config, shuffle_files, kwargs
  docs = VALIDATION_DOCS if str(split).startswith("validation") else TRAIN_DOCS
  return tf.data.Dataset.from_tensor_slices(
      {"text": docs, "url": [f"https://example.com/{i}" for i in range(len(docs))],
       "timestamp": ["2019-04-25T00:00:00Z"] * len(docs)})


@pytest.fixture
def mock_c4(tmp_path):
  """tfds mocked with the c4 metadata written under tmp (so it counts as prepared)."""
  metadata = tmp_path / "tfds_metadata"
  builder = tfds.builder(C4, data_dir=str(metadata))
  os.makedirs(builder.data_dir)
  builder.info.write_to_directory(builder.data_dir)
  with tfds.testing.mock_data(as_dataset_fn=fake_c4, data_dir=str(metadata)):
    yield


def test_c4_end_to_end_on_mock_data(mock_c4, sp_model, tmp_path):
  del mock_c4
  cfg = make_cfg("c4", vocab_path=sp_model, vocab_extra_ids=0,
                 tfds_data_dir=str(tmp_path / "tfds"))
  source = data.validate(cfg, SEQ_LEN)
  assert isinstance(source, data_seqio.C4Source)
  pieces = spm.SentencePieceProcessor(model_file=sp_model).vocab_size()
  assert (source.vocab_size, source.eos_id) == (pieces, 1) and source.known_vocab_size is None
  eos = data.eos_id(cfg)
  iterator = data.make_train_iterator(cfg, SEQ_LEN)
  batches = take(iterator, 6)
  rows = np.concatenate(batches)
  assert rows.shape == (24, SEQ_LEN + 1) and rows.dtype == np.int32 and (rows != 0).all()
  encoded = {tuple(sp_encode(sp_model, doc)) for doc in TRAIN_DOCS}
  found = segments(rows, eos)
  assert len(found) > 3 and all(tuple(seg) in encoded for seg in found)

  # Resume (the stream is re-read and skipped), across an epoch boundary.
  state = json.loads(json.dumps(iterator.get_state()))
  expected = take(iterator, 30)
  restored = data.make_train_iterator(cfg, SEQ_LEN)
  restored.set_state(state)
  np.testing.assert_array_equal(np.stack(take(restored, 30)), np.stack(expected))

  # Order is a function of the seed; two hosts split each global batch.
  np.testing.assert_array_equal(np.stack(take(data.make_train_iterator(cfg, SEQ_LEN), 6)),
                                np.stack(batches))
  hosts = [take(data.make_train_iterator(cfg, SEQ_LEN, process_index=p, process_count=2), 2)
           for p in range(2)]
  for step in range(2):
    np.testing.assert_array_equal(np.concatenate([hosts[0][step], hosts[1][step]]),
                                  batches[step])
  cfg.seed = 1
  assert not np.array_equal(np.stack(take(data.make_train_iterator(cfg, SEQ_LEN), 6)),
                            np.stack(batches))

  # Eval: the validation split packed in order, whatever the seed.
  val_stream = data_common.concat_documents(
      [sp_encode(sp_model, doc) for doc in VALIDATION_DOCS], eos, np.int32)
  eval_rows = np.concatenate(data.make_eval_batches(cfg, SEQ_LEN))
  assert eval_rows.shape == (8, SEQ_LEN + 1)
  np.testing.assert_array_equal(eval_rows.ravel(), val_stream[:eval_rows.size])

  # The tokenize command writes the same stream.
  meta = tokenize.write_token_file(cfg, str(tmp_path / "val.npy"), "validation")
  np.testing.assert_array_equal(np.load(tmp_path / "val.npy"), val_stream)
  assert meta["vocab_size"] == data.vocab_size(cfg) and meta["eos_id"] == eos


def test_c4_not_prepared_names_the_build_command(sp_model, tmp_path):
  cfg = make_cfg("c4", vocab_path=sp_model, tfds_data_dir=str(tmp_path / "empty"))
  with pytest.raises(DataError, match=r"not prepared.*tfds build c4/en --data_dir=.*"
                     r"--config.data.c4.tfds_data_dir"):
    data.validate(cfg, SEQ_LEN)
  with pytest.raises(DataError, match="not prepared"):
    next(data.make_train_iterator(cfg, SEQ_LEN))
  assert not os.path.exists(tmp_path / "empty" / "downloads")  # nothing was fetched


def test_c4_missing_or_bad_vocabulary(tmp_path):
  (tmp_path / "bad.model").write_bytes(b"\x00\x01 not a model")
  for vocab, message in [("missing.model", "cannot read"), ("bad.model", "not a loadable")]:
    cfg = make_cfg("c4", vocab_path=str(tmp_path / vocab), tfds_data_dir=str(tmp_path))
    with pytest.raises(DataError, match=f"{message}.*--config.data.c4.vocab_path"):
      data.validate(cfg, SEQ_LEN)
