"""What a data source is (`Source`) and the batch iterators sources build; numpy only.

A source is made from the data config (the shared fields plus its own group, `data.<name>`).
It says its vocabulary, checks its config, and gives training batches, held-out batches and
the token stream of a split. The package (`stability/data/__init__.py`) holds the registry of
sources and the public entry points; the sources live in local.py (embedded, tokens, synthetic)
and seqio.py (c4, text).
"""

import itertools
from typing import Callable, Iterator

from absl import logging
import numpy as np

from stability.data import common as data_common
from stability.data.common import DataError


class Source:
  """One data source; `cfg` is the whole data config, `own` its group `data.<name>`."""

  name = ""

  def __init__(self, data_cfg):
    self.cfg = data_cfg
    self.own = data_cfg[self.name]

  def vocab(self) -> tuple[int, int]:
    """(vocabulary size: the model's embedding rows, the id appended after every document)."""
    raise NotImplementedError

  @property
  def vocab_size(self) -> int:
    return self.vocab()[0]

  @property
  def eos_id(self) -> int:
    return self.vocab()[1]

  @property
  def known_vocab_size(self) -> int | None:
    """The vocabulary size if the config alone gives it (no file read), else None."""
    return None

  def fingerprint(self) -> dict | None:
    """Which text this source reads, where its config alone does not say (provenance)."""
    return None

  @property
  def eval_batch_size(self) -> int:
    return self.cfg.eval_batch_size or self.cfg.batch_size

  def validate(self, seq_len: int, process_count: int = 1) -> "Source":
    """Cheap checks of the data config before anything compiles, the held-out split included;
    raises DataError. Returns the source."""
    check_positive("model.seq_len", seq_len)
    check_positive("data.batch_size", self.cfg.batch_size)
    for name in ("seed", "eval_batches", "eval_batch_size"):
      value = self.cfg[name]
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise DataError(f"data.{name}={value!r} must be an integer >= 0")
    fraction = self.cfg.eval_fraction
    if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
      raise DataError(f"data.eval_fraction={fraction!r} must be a number in [0, 1)")
    data_common.host_rows(self.cfg.batch_size, 0, process_count)
    data_common.host_rows(self.eval_batch_size, 0, process_count, "data.eval_batch_size")
    self.check(seq_len)
    return self

  def check(self, seq_len: int) -> None:
    """The source's own checks (validate does the shared ones)."""

  def info(self, seq_len: int) -> dict:
    """What a saved iterator state must agree with."""
    return {"source": self.name, "seed": int(self.cfg.seed), "batch_size": self.cfg.batch_size,
            "row_len": seq_len + 1}

  def train_iterator(self, seq_len: int, host: tuple[int, int]) -> "BatchIterator":
    """Rows [host) of every global training batch, forever."""
    raise NotImplementedError

  def eval_batches(self, seq_len: int, batch_size: int) -> list[np.ndarray]:
    """Up to data.eval_batches global batches of held-out rows, in order."""
    raise NotImplementedError

  def token_chunks(self, split: str) -> Iterator[np.ndarray]:
    """The split's token stream (documents + EOS) in chunks, in the source's own order."""
    raise DataError(f"data.source={self.name} has no documents to tokenize; use c4, text or "
                    "embedded")


class RowSource(Source):
  """A source whose splits are flat token streams cut into rows at fixed offsets."""

  def token_streams(self) -> dict[str, np.ndarray]:
    """{"train", "validation"}: the split's documents, each followed by EOS."""
    raise NotImplementedError

  def rows(self, seq_len: int, split: str) -> np.ndarray:
    """The packed rows [R, seq_len + 1] of split "train" or "validation"."""
    stream_N = self.token_streams()[split]
    if split == "train":
      return packed_rows(stream_N, seq_len + 1, f"the {self.name} train split")
    return packed_rows(stream_N, seq_len + 1, "", min_rows=0)

  def train_iterator(self, seq_len: int, host: tuple[int, int]) -> "BatchIterator":
    rows_RxL1 = self.rows(seq_len, "train")
    batch_size = self.cfg.batch_size
    if len(rows_RxL1) < batch_size:
      logging.warning("data: only %d training rows for a batch of %d; batches repeat rows",
                      len(rows_RxL1), batch_size)
    return RowsIterator(rows_RxL1, batch_size, int(self.cfg.seed), host, self.info(seq_len))

  def eval_batches(self, seq_len: int, batch_size: int) -> list[np.ndarray]:
    rows_RxL1 = self.rows(seq_len, "validation")
    num = min(self.cfg.eval_batches, len(rows_RxL1) // batch_size)
    return [np.asarray(rows_RxL1[i * batch_size:(i + 1) * batch_size], np.int32)
            for i in range(num)]

  def token_chunks(self, split: str) -> Iterator[np.ndarray]:
    return iter([self.token_streams()[split]])


def check_positive(name: str, value: int) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise DataError(f"{name}={value!r} must be a positive integer")


def too_few_eval_rows(source: str, batch_size: int, seq_len: int) -> str:
  return (f"the held-out split of data.source={source} has fewer than one eval batch of "
          f"{batch_size} rows of {seq_len + 1} tokens; lower --config.data.eval_batch_size, or "
          "hold out more data (data.eval_fraction, or data.tokens.eval_path for tokens)")


def packed_rows(stream_N: np.ndarray, row_len: int, what: str, min_rows: int = 1) -> np.ndarray:
  """A flat stream as rows [R, row_len] (a view; the ragged tail is dropped)."""
  num_rows = len(stream_N) // row_len
  if num_rows < min_rows:
    raise DataError(f"{what} has {len(stream_N)} tokens, fewer than one row of seq_len + 1 = "
                    f"{row_len}; use more data or a smaller --config.model.seq_len")
  return stream_N[:num_rows * row_len].reshape(num_rows, row_len)


# --- iterators --------------------------------------------------------------------------------


class BatchIterator:
  """Infinite iterator of this host's int32 [batch_size // process_count, seq_len + 1] batches."""

  def __init__(self, info: dict):
    self._info = info  # what a saved state must agree with (source, seed, batch size, ...)
    self._step = 0

  def __iter__(self) -> "BatchIterator":
    return self

  def __next__(self) -> np.ndarray:
    batch = self._batch(self._step)
    self._step += 1
    return batch

  def _batch(self, step: int) -> np.ndarray:
    raise NotImplementedError

  def get_state(self) -> dict:
    """JSON-serialisable: the number of global batches read, plus what they depend on."""
    return {"step": self._step, **self._info}

  def set_state(self, state: dict) -> None:
    """Continues exactly where the iterator that wrote `state` was."""
    for key, value in self._info.items():
      if key in state and state[key] != value:
        raise DataError(f"the saved data state has {key}={state[key]!r} but the config gives "
                        f"{value!r}; resume with the data config of the checkpoint")
    self._step = int(state["step"])


class RowsIterator(BatchIterator):
  """Batches of packed rows, a fresh permutation of all rows each epoch; O(1) resume."""

  def __init__(self, rows_RxL1: np.ndarray, batch_size: int, seed: int, host: tuple[int, int],
               info: dict):
    super().__init__({**info, "num_rows": len(rows_RxL1)})
    self._rows_RxL1 = rows_RxL1
    self._batch_size = batch_size
    self._seed = seed
    self._host = host
    self._permutations: dict[int, np.ndarray] = {}

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch not in self._permutations:
      num_rows = len(self._rows_RxL1)
      perm_R = np.random.default_rng([self._seed, epoch]).permutation(num_rows)
      self._permutations = {e: p for e, p in self._permutations.items() if e >= epoch - 1}
      self._permutations[epoch] = perm_R.astype(np.int32 if num_rows < 2**31 else np.int64)
    return self._permutations[epoch]

  def _batch(self, step: int) -> np.ndarray:
    stream_index_S = step * self._batch_size + np.arange(*self._host)
    epoch_S, position_S = np.divmod(stream_index_S, len(self._rows_RxL1))
    row_S = np.empty_like(position_S)
    for epoch in np.unique(epoch_S):
      in_epoch = epoch_S == epoch
      row_S[in_epoch] = self._permutation(int(epoch))[position_S[in_epoch]]
    return gather_rows(self._rows_RxL1, row_S)


class SyntheticIterator(BatchIterator):
  """Uniform random ids, a pure function of (seed, step)."""

  def __init__(self, vocab: int, batch_size: int, row_len: int, seed: int,
               host: tuple[int, int], info: dict):
    super().__init__(info)
    self._shape = (batch_size, row_len)
    self._vocab, self._seed, self._host = vocab, seed, host

  def _batch(self, step: int) -> np.ndarray:
    return synthetic_batch(self._vocab, self._shape, [self._seed, step])[slice(*self._host)]


class StreamIterator(BatchIterator):
  """Packs a document stream (epoch after epoch) into batches; resume re-reads n batches."""

  def __init__(self, open_epoch: Callable[[int], Iterator[np.ndarray]], eos: int,
               batch_size: int, row_len: int, host: tuple[int, int], info: dict):
    super().__init__(info)
    self._open_epoch = open_epoch
    self._eos, self._batch_size, self._row_len, self._host = eos, batch_size, row_len, host
    self._restart()

  def _restart(self) -> None:
    self._step = 0
    self._packer = data_common.RowPacker(self._documents(), self._eos, self._row_len)

  def _documents(self) -> Iterator[np.ndarray]:
    for epoch in itertools.count():
      count = 0
      for count, doc in enumerate(self._open_epoch(epoch), 1):
        yield doc
      if not count:
        raise DataError(f"the {self._info['source']} training split yielded no documents")
      logging.info("data: epoch %d of the %s stream done", epoch, self._info["source"])

  def _batch(self, step: int) -> np.ndarray:
    assert step == self._step, "a stream is read in order"
    return self._packer.take(self._batch_size)[slice(*self._host)]

  def set_state(self, state: dict) -> None:
    """Rebuilds the stream and reads (and drops) the first state["step"] global batches."""
    super().set_state(state)
    target = self._step
    logging.info("data: resuming the %s stream by skipping %d batches", self._info["source"],
                 target)
    self._restart()
    for _ in range(target):
      self._packer.take(self._batch_size)
      self._step += 1


def gather_rows(rows_RxL1: np.ndarray, row_ids_B: np.ndarray) -> np.ndarray:
  """rows[row_ids] as int32, read in ascending order (friendly to memmaps)."""
  order_B = np.argsort(row_ids_B, kind="stable")
  batch_BxL1 = np.empty((len(row_ids_B), rows_RxL1.shape[1]), np.int32)
  batch_BxL1[order_B] = rows_RxL1[row_ids_B[order_B]]
  return batch_BxL1


def synthetic_batch(vocab: int, shape: tuple[int, int], seed: list[int]) -> np.ndarray:
  return np.random.default_rng(seed).integers(0, vocab, size=shape, dtype=np.int32)
