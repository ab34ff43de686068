"""The data pipeline without TensorFlow: packing, order, resume, hosts, embedded corpus, errors.

The seqio sources (text, c4) are tested in test_data_seqio.py.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import base
from stability import config_schema
from stability import data
from stability.data import common as data_common
from stability.data import source as data_source
from stability.data import embedded_corpus
from stability.data.common import DataError
from stability.tools import tokenize

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ_LEN = 32


def make_cfg(source: str, **fields):
  """The data config of `source`; a field it shares with every source is set on `data`, any
  other on the source's own group `data.<source>`."""
  cfg = base.get_config(f"data={source}").data
  cfg.update(dict(batch_size=8, eval_batches=2, eval_batch_size=0, seed=0))
  for name, value in fields.items():
    (cfg if name in cfg else cfg[source])[name] = value
  return cfg


def take(iterator, n: int) -> list[np.ndarray]:
  return [next(iterator) for _ in range(n)]


def random_documents(num_docs: int, seed: int = 0) -> list[np.ndarray]:
  rng = np.random.default_rng(seed)
  return [rng.integers(3, 200, size=int(rng.integers(1, 50))) for _ in range(num_docs)]


@pytest.fixture(autouse=True)
def no_home_cache(tmp_path, monkeypatch):
  """A cache_dir left empty would go to $STABILITY_CACHE: keep it out of the user's home."""
  monkeypatch.setenv("STABILITY_CACHE", str(tmp_path / "stability_cache"))


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory) -> str:
  """An embedded-corpus cache built once per session (never the user's home)."""
  cache = str(tmp_path_factory.mktemp("embedded_cache"))
  embedded_corpus.ensure_token_files(cache, 0.01)
  return cache


@pytest.fixture
def tokens_file(tmp_path) -> tuple[str, np.ndarray]:
  """A .npy token file of 400 random documents with EOS (id 1) after each."""
  stream_N = data_common.concat_documents(random_documents(400), 1, np.uint16)
  path = str(tmp_path / "tokens.npy")
  np.save(path, stream_N)
  return path, stream_N


def source_cfg(source: str, embedded_cache: str, tokens_path: str, **fields):
  paths = {"embedded": dict(cache_dir=embedded_cache),
           "tokens": dict(path=tokens_path, eval_fraction=0.1),
           "synthetic": dict(vocab_size=101)}[source]
  return make_cfg(source, **paths, **fields)


SOURCES = ("embedded", "tokens", "synthetic")


# --- packing ----------------------------------------------------------------------------------


def test_concat_documents_puts_eos_after_each_document():
  docs = [np.array([5, 6, 7]), np.array([], int), np.array([8])]
  stream = data_common.concat_documents(docs, eos_id=1, dtype=np.uint16)
  np.testing.assert_array_equal(stream, [5, 6, 7, 1, 8, 1])


def test_row_packer_cuts_exact_rows_of_the_concatenation():
  docs = random_documents(50)
  packer = data_common.RowPacker(iter(docs), eos_id=1, row_len=SEQ_LEN + 1)
  rows = np.concatenate([packer.take(3), packer.take(2), packer.take(1)])
  assert rows.shape == (6, SEQ_LEN + 1) and rows.dtype == np.int32
  stream = data_common.concat_documents(docs, 1, np.int32)
  np.testing.assert_array_equal(rows.ravel(), stream[:rows.size])
  with pytest.raises(StopIteration):
    packer.take(10_000)


def test_tokens_epoch_is_a_permutation_of_rows_cut_at_fixed_offsets(tokens_file):
  path, stream = tokens_file
  row_len = SEQ_LEN + 1
  num_rows = len(stream) // row_len
  cfg = make_cfg("tokens", path=path, eval_fraction=0.0, batch_size=num_rows)
  epoch0, epoch1 = take(data.make_train_iterator(cfg, SEQ_LEN), 2)
  rows = stream[:num_rows * row_len].reshape(num_rows, row_len)
  index_of = {row.tobytes(): i for i, row in enumerate(rows.astype(np.int32))}
  for epoch in (epoch0, epoch1):
    assert epoch.shape == (num_rows, row_len) and epoch.dtype == np.int32
    order = [index_of[row.tobytes()] for row in epoch]
    assert sorted(order) == list(range(num_rows))  # each row exactly once, exact content
  assert not np.array_equal(epoch0, epoch1)  # reshuffled per epoch
  assert (epoch0 != data_common.PAD_ID).all()  # no padding


def test_embedded_stream_is_documents_with_eos(embedded_cache):
  docs = embedded_corpus.load_documents(embedded_corpus.corpus_path(embedded_cache))
  splits = data_common.split_documents(docs, 0.01)
  arrays = embedded_corpus.token_arrays(embedded_cache, 0.01)
  expected = np.concatenate([np.append(data_common.byte_encode(d), 1) for d in splits["train"]])
  np.testing.assert_array_equal(arrays["train"], expected)
  assert 0 < len(splits["validation"]) < len(docs) / 20
  batch = next(data.make_train_iterator(make_cfg("embedded", cache_dir=embedded_cache), SEQ_LEN))
  assert batch.shape == (8, SEQ_LEN + 1) and batch.dtype == np.int32
  assert (batch != data_common.PAD_ID).all() and batch.max() < 259
  text = data_common.byte_decode(batch[0][batch[0] != 1])
  assert any(piece in text for piece in ("the", "The", "of", "a "))


def test_byte_encode_documents_matches_per_document_encoding():
  docs = ["héllo ✓", "", "a\x00b", "日本"]
  expected = np.concatenate([np.append(data_common.byte_encode(d), 1) for d in docs])
  np.testing.assert_array_equal(data_common.byte_encode_documents(docs), expected)
  assert data_common.byte_decode(data_common.byte_encode("héllo ✓")) == "héllo ✓"


# --- order, resume, hosts ---------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_same_seed_same_batches_other_seed_differs(source, embedded_cache, tokens_file):
  cfg = lambda seed: source_cfg(source, embedded_cache, tokens_file[0], seed=seed)
  first = take(data.make_train_iterator(cfg(0), SEQ_LEN), 3)
  again = take(data.make_train_iterator(cfg(0), SEQ_LEN), 3)
  other = take(data.make_train_iterator(cfg(1), SEQ_LEN), 3)
  np.testing.assert_array_equal(np.stack(first), np.stack(again))
  assert not np.array_equal(np.stack(first), np.stack(other))


@pytest.mark.parametrize("source", SOURCES)
def test_restored_iterator_continues_exactly(source, embedded_cache, tokens_file):
  # 60 batches of 8 cross an epoch boundary of the tokens file (about 310 rows).
  cfg = source_cfg(source, embedded_cache, tokens_file[0])
  iterator = data.make_train_iterator(cfg, SEQ_LEN)
  take(iterator, 20)
  state = json.loads(json.dumps(iterator.get_state()))
  expected = take(iterator, 40)
  restored = data.make_train_iterator(cfg, SEQ_LEN)
  restored.set_state(state)
  np.testing.assert_array_equal(np.stack(take(restored, 40)), np.stack(expected))
  assert restored.get_state() == iterator.get_state()


def test_state_from_another_data_config_is_refused(tokens_file):
  state = data.make_train_iterator(make_cfg("tokens", path=tokens_file[0]),
                                   SEQ_LEN).get_state()
  other = data.make_train_iterator(make_cfg("tokens", path=tokens_file[0], seed=3),
                                   SEQ_LEN)
  with pytest.raises(DataError, match="seed"):
    other.set_state(state)


@pytest.mark.parametrize("source", SOURCES)
def test_two_hosts_split_the_global_batch(source, embedded_cache, tokens_file):
  cfg = source_cfg(source, embedded_cache, tokens_file[0])
  global_batches = take(data.make_train_iterator(cfg, SEQ_LEN), 3)
  hosts = [take(data.make_train_iterator(cfg, SEQ_LEN, process_index=p, process_count=2), 3)
           for p in range(2)]
  for step, batch in enumerate(global_batches):
    np.testing.assert_array_equal(np.concatenate([hosts[0][step], hosts[1][step]]), batch)
    assert hosts[0][step].shape == (4, SEQ_LEN + 1)
    rows0 = {row.tobytes() for row in hosts[0][step]}
    assert not rows0 & {row.tobytes() for row in hosts[1][step]}
  eval_global = data.make_eval_batches(cfg, SEQ_LEN)
  eval_host1 = data.make_eval_batches(cfg, SEQ_LEN, process_index=1, process_count=2)
  np.testing.assert_array_equal(eval_host1[0], eval_global[0][4:])


# --- eval -------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_eval_batches_are_fixed_and_independent_of_seed(source, embedded_cache, tokens_file):
  cfg = lambda seed: source_cfg(source, embedded_cache, tokens_file[0], seed=seed)
  eval0 = data.make_eval_batches(cfg(0), SEQ_LEN)
  eval1 = data.make_eval_batches(cfg(1), SEQ_LEN)
  assert len(eval0) == 2 and eval0[0].shape == (8, SEQ_LEN + 1) and eval0[0].dtype == np.int32
  np.testing.assert_array_equal(np.stack(eval0), np.stack(eval1))
  train_rows = {row.tobytes() for row in np.concatenate(
      take(data.make_train_iterator(cfg(0), SEQ_LEN), 10))}
  assert not train_rows & {row.tobytes() for row in np.concatenate(eval0)}


def test_tokens_eval_is_the_held_out_tail(tokens_file):
  path, stream = tokens_file
  row_len = SEQ_LEN + 1
  num_rows = len(stream) // row_len
  cfg = make_cfg("tokens", path=path, eval_fraction=0.1, eval_batch_size=4)
  num_eval = int(np.ceil(num_rows * 0.1))
  tail = stream[(num_rows - num_eval) * row_len:num_rows * row_len].reshape(-1, row_len)
  np.testing.assert_array_equal(np.concatenate(data.make_eval_batches(cfg, SEQ_LEN)), tail[:8])
  train = np.concatenate(take(data.make_train_iterator(cfg, SEQ_LEN), 40))
  assert not {r.tobytes() for r in train} & {r.tobytes() for r in tail.astype(np.int32)}


# --- sources and validation -------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_each_source_says_its_vocabulary_and_eos(source, embedded_cache, tokens_file):
  expected = {"embedded": (259, 1), "tokens": (int(tokens_file[1].max()) + 1, 1),
              "synthetic": (101, 1)}[source]
  source_obj = data.source_for(source_cfg(source, embedded_cache, tokens_file[0]))
  assert isinstance(source_obj, data.SOURCES[source]) and source_obj.name == source
  assert (source_obj.vocab_size, source_obj.eos_id) == expected


@pytest.mark.parametrize("source", SOURCES)
def test_iterators_and_eval_batches_do_not_validate_again(source, embedded_cache, tokens_file,
                                                          monkeypatch):
  calls = []
  validate = data_source.Source.validate
  monkeypatch.setattr(data_source.Source, "validate",
                      lambda self, *args: calls.append(self.name) or validate(self, *args))
  cfg = source_cfg(source, embedded_cache, tokens_file[0])
  checked = data.validate(cfg, SEQ_LEN, process_count=2)
  assert calls == [source] and isinstance(checked, data.SOURCES[source])
  for given in (checked, cfg):  # the checked source, or the config itself
    next(data.make_train_iterator(given, SEQ_LEN, process_index=1, process_count=2))
    assert data.make_eval_batches(given, SEQ_LEN, process_index=1, process_count=2)
  assert calls == [source]


# --- vocabulary -------------------------------------------------------------------------------


def test_vocab_sizes_and_eos(tokens_file, tmp_path):
  assert data.vocab_size(make_cfg("embedded")) == 259
  assert data.eos_id(make_cfg("embedded")) == 1
  assert data.vocab_size(make_cfg("synthetic", vocab_size=77)) == 77
  path, stream = tokens_file
  assert data.vocab_size(make_cfg("tokens", path=path)) == int(stream.max()) + 1
  assert data.vocab_size(make_cfg("tokens", path=path, vocab_size=300)) == 300
  with open(path + ".json", "w") as f:
    json.dump({"vocab_size": 512, "eos_id": 2}, f)
  assert data.vocab_size(make_cfg("tokens", path=path)) == 512
  assert data.eos_id(make_cfg("tokens", path=path)) == 2


def test_synthetic_batches_cover_the_vocab():
  batch = next(data.make_train_iterator(make_cfg("synthetic", vocab_size=50), SEQ_LEN))
  assert batch.dtype == np.int32 and batch.min() >= 0 and batch.max() < 50
  assert len(np.unique(batch)) == 50


# --- embedded corpus --------------------------------------------------------------------------


@pytest.mark.slow
def test_embedded_corpus_is_deterministic(embedded_cache, tmp_path):
  path = embedded_corpus.ensure_corpus(str(tmp_path))
  with open(path, "rb") as a, open(embedded_corpus.corpus_path(embedded_cache), "rb") as b:
    assert a.read() == b.read()
  assert f"py{sys.version_info.major}.{sys.version_info.minor}" in os.path.basename(path)
  with open(path, encoding="utf-8") as f:
    docs = [json.loads(line) for line in f]
  assert len(docs) > 1000 and os.path.getsize(path) > 500_000
  assert all(len(d["text"]) >= embedded_corpus.MIN_CHARS for d in docs)
  assert not any(d["where"].startswith(("test/", "idlelib/")) for d in docs)
  assert len({d["text"] for d in docs}) == len(docs)


def test_embedded_corpus_write_is_atomic(tmp_path, monkeypatch):
  def write_half_then_fail(f, docs):
    embedded_corpus_write(f, docs[:len(docs) // 2])
    raise KeyboardInterrupt("killed mid-write")

  embedded_corpus_write = embedded_corpus._write_documents
  monkeypatch.setattr(embedded_corpus, "_write_documents", write_half_then_fail)
  monkeypatch.setattr(embedded_corpus, "extract_documents",
                      lambda root=None: [{"text": f"doc {i} " * 20, "where": "x"}
                                         for i in range(100)])
  with pytest.raises(KeyboardInterrupt):
    embedded_corpus.ensure_corpus(str(tmp_path))
  assert os.listdir(tmp_path) == []  # neither the corpus nor a temporary file
  monkeypatch.setattr(embedded_corpus, "_write_documents", embedded_corpus_write)
  path = embedded_corpus.ensure_corpus(str(tmp_path))
  assert len(embedded_corpus.load_documents(path)) == 100


def test_cache_dir_comes_from_config_then_environment(tmp_path, monkeypatch):
  monkeypatch.setenv("STABILITY_CACHE", str(tmp_path / "env"))
  assert data_common.cache_dir("") == str(tmp_path / "env")
  assert data_common.cache_dir(str(tmp_path / "cfg")) == str(tmp_path / "cfg")


# --- tokenize ---------------------------------------------------------------------------------


def test_tokenize_cli_writes_the_embedded_stream(embedded_cache, tmp_path):
  out = tmp_path / "val.bin"
  subprocess.run(
      [sys.executable, "-m", "stability.tools.tokenize", "--config=configs/base.py:data=embedded",
       f"--config.data.embedded.cache_dir={embedded_cache}", f"--output={out}",
       "--split=validation", "--max_tokens=5000"],
      cwd=REPO, check=True, capture_output=True, timeout=120)
  expected = embedded_corpus.token_arrays(embedded_cache, 0.01)["validation"][:5000]
  np.testing.assert_array_equal(np.fromfile(out, np.uint16), expected)
  assert json.loads((tmp_path / "val.bin.json").read_text())["vocab_size"] == 259


@pytest.mark.parametrize("source", ["tokens", "synthetic"])
def test_sources_without_documents_refuse_to_tokenize(source, embedded_cache, tokens_file):
  src = data.source_for(source_cfg(source, embedded_cache, tokens_file[0]))
  with pytest.raises(DataError, match="no documents to tokenize"):
    next(iter(src.token_chunks("train")))


def test_tokens_file_from_tokenize_serves_the_embedded_batches(embedded_cache, tmp_path):
  embedded = make_cfg("embedded", cache_dir=embedded_cache)
  for split in ("train", "validation"):
    tokenize.write_token_file(embedded, str(tmp_path / f"{split}.npy"), split)
  tokens = make_cfg("tokens", path=str(tmp_path / "train.npy"),
                    eval_path=str(tmp_path / "validation.npy"))
  for make in (lambda c: take(data.make_train_iterator(c, SEQ_LEN), 3),
               lambda c: data.make_eval_batches(c, SEQ_LEN)):
    np.testing.assert_array_equal(np.stack(make(tokens)), np.stack(make(embedded)))
  assert not any(name.endswith((".tmp", ".raw")) for name in os.listdir(tmp_path))


# --- bad input --------------------------------------------------------------------------------


def test_unknown_source_lists_the_allowed_ones():
  with pytest.raises(DataError, match="c4, text, embedded, tokens, synthetic"):
    data.validate(make_cfg("bogus"), SEQ_LEN)
  with pytest.raises(DataError, match="unknown data.source 'bogus'; allowed: c4, text, embedded"):
    data.source_for(make_cfg("bogus"))


def test_batch_not_divisible_by_hosts():
  with pytest.raises(DataError, match="not divisible by the 3 hosts"):
    data.make_train_iterator(make_cfg("synthetic"), SEQ_LEN, process_index=0, process_count=3)
  with pytest.raises(DataError, match="eval_batch_size"):
    data.validate(make_cfg("synthetic", batch_size=6, eval_batch_size=5), SEQ_LEN,
                  process_count=2)


def test_tokens_bad_files(tmp_path):
  missing = make_cfg("tokens", path=str(tmp_path / "nope.npy"))
  with pytest.raises(DataError, match="does not exist.*stability.tools.tokenize"):
    data.validate(missing, SEQ_LEN)
  with pytest.raises(DataError, match="needs --config.data.tokens.path"):
    data.validate(make_cfg("tokens"), SEQ_LEN)
  (tmp_path / "empty.bin").write_bytes(b"")
  with pytest.raises(DataError, match="empty"):
    data.validate(make_cfg("tokens", path=str(tmp_path / "empty.bin")), SEQ_LEN)
  (tmp_path / "odd.bin").write_bytes(b"abc")
  with pytest.raises(DataError, match="tokens.dtype"):
    data.validate(make_cfg("tokens", path=str(tmp_path / "odd.bin")), SEQ_LEN)
  np.save(tmp_path / "short.npy", np.arange(10, dtype=np.uint16))
  with pytest.raises(DataError, match="fewer than one row"):
    data.validate(make_cfg("tokens", path=str(tmp_path / "short.npy")), SEQ_LEN)


def test_no_held_out_data_says_how_to_get_some(tokens_file):
  cfg = make_cfg("tokens", path=tokens_file[0], eval_fraction=0.0)
  with pytest.raises(DataError, match="eval_fraction"):
    data.make_eval_batches(cfg, SEQ_LEN)


# --- no TensorFlow ----------------------------------------------------------------------------

_NO_TF_SCRIPT = r"""
import sys

class BlockTensorFlow:
  BLOCKED = {"tensorflow", "seqio", "tensorflow_datasets", "tensorflow_text"}
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in self.BLOCKED:
      raise ImportError(f"{name} is blocked in this test")
    return None

sys.meta_path.insert(0, BlockTensorFlow())
from configs import base
from stability import config_schema
from stability import data
from stability.data.common import DataError

def cfg(source, **fields):
  c = base.get_config("data=" + source).data
  c.update(dict(batch_size=4, eval_batches=1, **fields))
  return c

for c in (cfg("embedded", embedded=dict(cache_dir=sys.argv[1])),
          cfg("tokens", tokens=dict(path=sys.argv[2])), cfg("synthetic")):
  batch = next(data.make_train_iterator(c, 16))
  assert batch.shape == (4, 17), batch.shape
  assert len(data.make_eval_batches(c, 16)) == 1
try:
  data.make_train_iterator(cfg("c4"), 16)
  raise AssertionError("c4 without TensorFlow should fail")
except DataError as e:
  assert "pip install" in str(e), e
leaked = [m for m in sys.modules if m.split(".")[0] in BlockTensorFlow.BLOCKED]
assert not leaked, leaked
print("no-tf ok")
"""


def test_data_works_without_tensorflow(embedded_cache, tokens_file):
  result = subprocess.run([sys.executable, "-c", _NO_TF_SCRIPT, embedded_cache, tokens_file[0]],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "no-tf ok" in result.stdout


def test_the_schema_names_every_source():
  assert sorted(data.SOURCES) == sorted(config_schema.DATA_SOURCES)
