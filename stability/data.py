"""Packed int32 training batches and a fixed eval set, from five sources (config.data.source).

  c4         seqio Task over tfds `c4/en` + the T5 SentencePiece vocabulary (needs TensorFlow)
  text       your UTF-8 text files through a seqio Task; bytes or SentencePiece (needs TensorFlow)
  embedded   docstrings of the Python standard library, byte ids; the demo / test default
  tokens     a flat file of token ids (.npy or raw .bin), memory-mapped; fastest for grids
  synthetic  seeded random ids, for benchmarks and smoke tests

Each is a `data_source.Source` in `SOURCES`, made from the data config: the shared fields
(batch_size, seed, eval_*) and its own group `data.<source>` (stability/config_schema.py).
`validate` checks the config once at start-up and returns the source; `make_train_iterator`
and `make_eval_batches` take the config or that source and check nothing again.

Packing (docs/paper_notes.md#data-and-tokenizer): documents are tokenized, concatenated with
EOS after each one, and cut into rows of exactly seq_len + 1 ids: no padding. A batch `x` gives
inputs `x[:, :-1]` and targets `x[:, 1:]`.

Order: the global batch sequence is a pure function of (dataset, data.seed, data.batch_size).
Host p of P reads rows [p*B/P, (p+1)*B/P) of every global batch. For embedded / tokens / text
the packed rows are cut at fixed offsets (row i = stream[i*(L+1) : (i+1)*(L+1)]) and visited in a
fresh permutation each epoch (seeded by seed and epoch); c4 streams documents shuffled by seqio
(seeded by seed and epoch) and packs them in order.

Resume: `get_state()` is `{"step": n, ...}`. For every source but c4 restoring is O(1); the c4
stream is rebuilt and the first n global batches are read and dropped (minutes for long runs:
pre-tokenize with `python -m stability.tools.tokenize` and use data.source=tokens for those).

Eval: a fixed list of batches from held-out data that does not depend on data.seed.

`import stability.data` and the embedded / tokens / synthetic sources need no TensorFlow.
"""

import json
import os

from absl import logging
import numpy as np

from stability import data_common
from stability import data_seqio  # imports TensorFlow lazily, inside its functions
from stability import data_source
from stability import embedded_corpus
from stability.data_common import DataError
from stability.data_source import BatchIterator, Source


class EmbeddedSource(data_source.RowSource):
  """Docstrings of the standard library as byte ids (embedded_corpus.py); `data.embedded`."""

  name = "embedded"

  def vocab(self) -> tuple[int, int]:
    return data_common.BYTE_VOCAB_SIZE, data_common.BYTE_EOS_ID

  @property
  def known_vocab_size(self) -> int:
    return data_common.BYTE_VOCAB_SIZE

  def check(self, seq_len: int) -> None:
    data_common.cache_dir(self.own.cache_dir)

  def token_streams(self) -> dict[str, np.ndarray]:
    cache = data_common.cache_dir(self.own.cache_dir)
    return embedded_corpus.token_arrays(cache, self.cfg.eval_fraction)

  def fingerprint(self) -> dict:
    """The corpus comes from the running Python: its name, documents and SHA-256."""
    return embedded_corpus_record(self.own.cache_dir)


_TOKENS_VOCAB: dict[tuple, int] = {}


class TokensSource(data_source.RowSource):
  """A flat file of token ids, memory-mapped; its tail rows held out; `data.tokens`."""

  name = "tokens"

  @property
  def known_vocab_size(self) -> int | None:
    return int(self.own.vocab_size) or None

  def _load(self, path: str) -> np.ndarray:
    return data_common.load_tokens(path, self.own.dtype)  # a memmap: cheap

  def vocab(self) -> tuple[int, int]:
    """(vocab_size, eos_id): config, else `<path>.json`, else max id + 1 / 1."""
    path = self.own.path
    tokens_N = self._load(path)
    sidecar = {}
    if os.path.exists(path + ".json"):
      with open(path + ".json") as f:
        sidecar = json.load(f)
    size = int(self.own.vocab_size) or sidecar.get("vocab_size", 0)
    eos = int(self.own.eos_id)
    eos = eos if eos >= 0 else sidecar.get("eos_id", data_common.BYTE_EOS_ID)
    if not size:
      key = (os.path.abspath(path), os.path.getsize(path), os.path.getmtime(path))
      if key not in _TOKENS_VOCAB:
        _TOKENS_VOCAB[key] = data_common.max_token_id(tokens_N) + 1
        logging.info("data.tokens.vocab_size=0: %s has max id %d -> vocab %d", path,
                     _TOKENS_VOCAB[key] - 1, _TOKENS_VOCAB[key])
      size = _TOKENS_VOCAB[key]
    return int(size), int(eos)

  def check(self, seq_len: int) -> None:
    if not self.own.path:
      raise DataError("data.source=tokens needs --config.data.tokens.path=<.npy or .bin file>; "
                      "write one with `python -m stability.tools.tokenize`")
    row_len = seq_len + 1
    num_rows = len(data_source.packed_rows(self._load(self.own.path), row_len, self.own.path))
    if self.own.eval_path:
      eval_rows = len(self._load(self.own.eval_path)) // row_len
    else:
      eval_rows = num_rows - self._train_rows(num_rows, row_len)
    if self.cfg.eval_batches and eval_rows < self.eval_batch_size:
      raise DataError(data_source.too_few_eval_rows(self.name, self.eval_batch_size, seq_len))

  def _train_rows(self, num_rows: int, row_len: int) -> int:
    """Rows left to train on after holding out the file's last eval_fraction."""
    num_eval = int(np.ceil(num_rows * self.cfg.eval_fraction))
    if num_eval >= num_rows:
      raise DataError(f"{self.own.path} has {num_rows} rows of {row_len}; holding out "
                      f"{num_eval} for eval leaves none to train on; lower data.eval_fraction or "
                      "set data.tokens.eval_path")
    return num_rows - num_eval

  def rows(self, seq_len: int, split: str) -> np.ndarray:
    """Train rows, and held-out rows: `eval_path`, else the last eval_fraction of rows."""
    row_len, eval_path = seq_len + 1, self.own.eval_path
    if eval_path and split == "validation":
      return data_source.packed_rows(self._load(eval_path), row_len, "", min_rows=0)
    all_RxL1 = data_source.packed_rows(self._load(self.own.path), row_len, self.own.path)
    if eval_path:
      return all_RxL1
    num_train = self._train_rows(len(all_RxL1), row_len)
    return all_RxL1[:num_train] if split == "train" else all_RxL1[num_train:]

  # A token file holds ids, not documents: nothing to tokenize.
  token_chunks = data_source.Source.token_chunks


class SyntheticSource(data_source.Source):
  """Seeded uniform random ids; eval batches do not depend on data.seed; `data.synthetic`."""

  name = "synthetic"
  EVAL_SEED = 0x5EED_E7A1

  def vocab(self) -> tuple[int, int]:
    return int(self.own.vocab_size), data_common.BYTE_EOS_ID

  @property
  def known_vocab_size(self) -> int:
    return self.vocab_size

  def check(self, seq_len: int) -> None:
    if self.own.vocab_size < 2:
      raise DataError(f"data.synthetic.vocab_size={self.own.vocab_size} must be >= 2")

  def train_iterator(self, seq_len: int, host: tuple[int, int]) -> BatchIterator:
    return data_source.SyntheticIterator(self.vocab_size, self.cfg.batch_size, seq_len + 1,
                                         int(self.cfg.seed), host, self.info(seq_len))

  def eval_batches(self, seq_len: int, batch_size: int) -> list[np.ndarray]:
    shape = (batch_size, seq_len + 1)
    return [data_source.synthetic_batch(self.vocab_size, shape, [self.EVAL_SEED, i])
            for i in range(self.cfg.eval_batches)]


SOURCES: dict[str, type[Source]] = {
    "c4": data_seqio.C4Source, "text": data_seqio.TextSource, "embedded": EmbeddedSource,
    "tokens": TokensSource, "synthetic": SyntheticSource}


# --- public entry points ----------------------------------------------------------------------


def source_for(data_cfg) -> Source:
  """The source of a data config (a Source is returned as it is); checks only the name."""
  if isinstance(data_cfg, Source):
    return data_cfg
  if data_cfg.source not in SOURCES:
    raise DataError(f"unknown data.source {data_cfg.source!r}; allowed: {', '.join(SOURCES)}")
  return SOURCES[data_cfg.source](data_cfg)


def validate(data_cfg, seq_len: int, *, process_count: int = 1) -> Source:
  """Every check of the data config, the held-out split included, before anything compiles;
  raises DataError. Returns the checked source."""
  return source_for(data_cfg).validate(seq_len, process_count)


def vocab_size(data_cfg) -> int:
  """Size of the vocabulary of the configured source (the model's embedding rows)."""
  return source_for(data_cfg).vocab_size


def eos_id(data_cfg) -> int:
  """The id appended after every document."""
  return source_for(data_cfg).eos_id


def make_train_iterator(data_cfg, seq_len: int, *, process_index: int = 0,
                        process_count: int = 1) -> BatchIterator:
  """This host's infinite stream of training batches, int32 [B / P, seq_len + 1]. Checks nothing
  that `validate` checks (call it once first)."""
  source = source_for(data_cfg)
  host = data_common.host_rows(source.cfg.batch_size, process_index, process_count)
  return source.train_iterator(seq_len, host)


def make_eval_batches(data_cfg, seq_len: int, *, process_index: int = 0,
                      process_count: int = 1) -> list[np.ndarray]:
  """The fixed held-out batches (this host's rows); the same for every seed and LR. Checks
  nothing that `validate` checks."""
  source = source_for(data_cfg)
  num_batches = source.cfg.eval_batches
  if not num_batches:
    return []
  batch_size = source.eval_batch_size
  host = slice(*data_common.host_rows(batch_size, process_index, process_count,
                                      "data.eval_batch_size"))
  global_batches = source.eval_batches(seq_len, batch_size)
  if not global_batches:
    raise DataError(data_source.too_few_eval_rows(source.name, batch_size, seq_len))
  if len(global_batches) < num_batches:
    logging.warning("data: the held-out split gives %d eval batches of %d, not data."
                    "eval_batches=%d", len(global_batches), batch_size, num_batches)
  return [batch[host] for batch in global_batches]


def embedded_corpus_record(cache: str = "") -> dict:
  """Which text this Python's embedded corpus is (name, documents, SHA-256 of its file); `cache`
  as `data.embedded.cache_dir` ('' for the default)."""
  return embedded_corpus.fingerprint(data_common.cache_dir(cache))


def embedded_documents(cache: str = "") -> list[str]:
  """The embedded corpus's documents (train and held-out alike), extracted on first use."""
  folder = data_common.cache_dir(cache)
  return embedded_corpus.load_documents(embedded_corpus.ensure_corpus(folder))
