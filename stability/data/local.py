"""The sources that need no TensorFlow: the embedded corpus, a token file, synthetic ids."""

import json
import os

from absl import logging
import numpy as np

from stability.data import common as data_common
from stability.data import embedded_corpus
from stability.data import source as data_source
from stability.data.common import DataError
from stability.data.source import BatchIterator


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
    return embedded_corpus.fingerprint(data_common.cache_dir(self.own.cache_dir))


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
