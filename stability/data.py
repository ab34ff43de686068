"""Packed int32 training batches and a fixed eval set, from five sources (config.data.source).

  c4         seqio Task over tfds `c4/en` + the T5 SentencePiece vocabulary (needs TensorFlow)
  text       your UTF-8 text files through a seqio Task; bytes or SentencePiece (needs TensorFlow)
  embedded   docstrings of the Python standard library, byte ids; the demo / test default
  tokens     a flat file of token ids (.npy or raw .bin), memory-mapped; fastest for grids
  synthetic  seeded random ids, for benchmarks and smoke tests

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
pre-tokenize with `python -m stability.tokenize` and use data.source=tokens for those).

Eval: a fixed list of batches from held-out data that does not depend on data.seed.

`import stability.data` and the embedded / tokens / synthetic sources need no TensorFlow.
"""

import itertools
import json
import os
from typing import Callable, Iterator

from absl import logging
import numpy as np

from stability import data_common
from stability import data_seqio  # imports TensorFlow lazily, inside its functions
from stability import embedded_corpus
from stability.data_common import DataError

SOURCES = ("c4", "text", "embedded", "tokens", "synthetic")
_SYNTHETIC_EVAL_SEED = 0x5EED_E7A1  # eval batches of `synthetic` do not depend on data.seed


# --- vocabulary -------------------------------------------------------------------------------


def _source(data_cfg) -> str:
  if data_cfg.source not in SOURCES:
    raise DataError(f"unknown data.source {data_cfg.source!r}; allowed: {', '.join(SOURCES)}")
  return data_cfg.source


def _uses_sentencepiece(data_cfg) -> bool:
  return data_cfg.source in ("c4", "text") and data_seqio.uses_sentencepiece(data_cfg)


def _sentencepiece_info(data_cfg) -> tuple[int, int]:
  return data_seqio.sentencepiece_info(data_cfg.vocab_path, data_cfg.get("vocab_extra_ids", 0))


def vocab_size(data_cfg) -> int:
  """Size of the vocabulary of the configured source (the model's embedding rows)."""
  source = _source(data_cfg)
  if _uses_sentencepiece(data_cfg):
    return _sentencepiece_info(data_cfg)[0]
  if source in ("embedded", "text"):
    return data_common.BYTE_VOCAB_SIZE
  if source == "synthetic":
    return int(data_cfg.synthetic_vocab_size)
  return _tokens_vocab(data_cfg)[0]


def eos_id(data_cfg) -> int:
  """The id appended after every document."""
  source = _source(data_cfg)
  if _uses_sentencepiece(data_cfg):
    return _sentencepiece_info(data_cfg)[1]
  if source == "tokens":
    return _tokens_vocab(data_cfg)[1]
  return data_common.BYTE_EOS_ID


_TOKENS_VOCAB: dict[tuple, tuple[int, int]] = {}


def _tokens_vocab(data_cfg) -> tuple[int, int]:
  """(vocab_size, eos_id) of a token file: config, else `<file>.json`, else max id + 1 / 1."""
  path = data_cfg.tokens_path
  tokens_N = data_common.load_tokens(path, data_cfg.tokens_dtype)  # a memmap: cheap
  sidecar = {}
  if os.path.exists(path + ".json"):
    with open(path + ".json") as f:
      sidecar = json.load(f)
  size = int(data_cfg.tokens_vocab_size) or sidecar.get("vocab_size", 0)
  eos = int(data_cfg.get("tokens_eos_id", -1))
  eos = eos if eos >= 0 else sidecar.get("eos_id", data_common.BYTE_EOS_ID)
  if not size:
    key = (os.path.abspath(path), os.path.getsize(path), os.path.getmtime(path))
    if key not in _TOKENS_VOCAB:
      _TOKENS_VOCAB[key] = data_common.max_token_id(tokens_N) + 1
      logging.info("data.tokens_vocab_size=0: %s has max id %d -> vocab %d", path,
                   _TOKENS_VOCAB[key] - 1, _TOKENS_VOCAB[key])
    size = _TOKENS_VOCAB[key]
  return int(size), int(eos)


# --- validation -------------------------------------------------------------------------------


def validate(data_cfg, seq_len: int, *, process_count: int = 1) -> None:
  """Cheap checks of the data config before anything compiles, the held-out split included;
  raises DataError."""
  _validate(data_cfg, seq_len, process_count, with_eval=True)


def _validate(data_cfg, seq_len: int, process_count: int, with_eval: bool) -> None:
  source = _source(data_cfg)
  _check_positive("model.seq_len", seq_len)
  _check_positive("data.batch_size", data_cfg.batch_size)
  for name in ("seed", "eval_batches", "eval_batch_size"):
    value = data_cfg[name]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
      raise DataError(f"data.{name}={value!r} must be an integer >= 0")
  fraction = data_cfg.eval_fraction
  if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
    raise DataError(f"data.eval_fraction={fraction!r} must be a number in [0, 1)")
  data_common.host_rows(data_cfg.batch_size, 0, process_count)
  data_common.host_rows(_eval_batch_size(data_cfg), 0, process_count, "data.eval_batch_size")
  _VALIDATORS[source](data_cfg, seq_len, with_eval)


def _check_positive(name: str, value: int) -> None:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise DataError(f"{name}={value!r} must be a positive integer")


def _validate_c4(data_cfg, seq_len: int, with_eval: bool) -> None:
  del seq_len, with_eval
  _sentencepiece_info(data_cfg)
  data_seqio.check_tfds_prepared(data_cfg.tfds_name, data_cfg.tfds_data_dir)


def _validate_text(data_cfg, seq_len: int, with_eval: bool) -> None:
  del seq_len, with_eval
  if data_cfg.doc_per not in ("line", "file"):
    raise DataError(f"data.doc_per={data_cfg.doc_per!r}; allowed: line, file")
  text_vocab = data_cfg.get("text_vocab", "bytes")
  if text_vocab not in ("bytes", "sentencepiece"):
    raise DataError(f"data.text_vocab={text_vocab!r}; allowed: bytes, sentencepiece")
  files = data_seqio.text_files(data_cfg.paths)
  if text_vocab == "sentencepiece":
    _sentencepiece_info(data_cfg)
  if not any(_has_text(path) for path in files):
    raise DataError(f"the text corpus is empty: the {len(files)} file(s) matched by "
                    f"data.paths={data_cfg.paths!r} hold only blank lines; fix --config.data.paths")


def _has_text(path: str, chunk: int = 1 << 16) -> bool:
  """Whether a file holds anything but whitespace (and a UTF-8 BOM); reads only until it does."""
  with open(path, "rb") as f:
    while block := f.read(chunk):
      if block.replace(b"\xef\xbb\xbf", b"").strip():
        return True
  return False


def _validate_embedded(data_cfg, seq_len: int, with_eval: bool) -> None:
  del seq_len, with_eval
  data_common.cache_dir(data_cfg.cache_dir)


def _validate_tokens(data_cfg, seq_len: int, with_eval: bool) -> None:
  if not data_cfg.tokens_path:
    raise DataError("data.source=tokens needs --config.data.tokens_path=<.npy or .bin file>; "
                    "write one with `python -m stability.tokenize`")
  row_len = seq_len + 1
  num_rows = len(_rows(data_common.load_tokens(data_cfg.tokens_path, data_cfg.tokens_dtype),
                       row_len, data_cfg.tokens_path))
  if data_cfg.get("eval_tokens_path", ""):
    eval_rows = len(data_common.load_tokens(data_cfg.eval_tokens_path,
                                            data_cfg.tokens_dtype)) // row_len
  else:
    eval_rows = num_rows - _tokens_train_rows(data_cfg, num_rows, row_len)
  eval_batch_size = _eval_batch_size(data_cfg)
  if with_eval and data_cfg.eval_batches and eval_rows < eval_batch_size:
    raise DataError(_too_few_eval_rows(data_cfg, eval_batch_size, seq_len))


def _tokens_train_rows(data_cfg, num_rows: int, row_len: int) -> int:
  """Rows of a token file left to train on after holding out its last eval_fraction."""
  num_eval = int(np.ceil(num_rows * data_cfg.eval_fraction))
  if num_eval >= num_rows:
    raise DataError(f"{data_cfg.tokens_path} has {num_rows} rows of {row_len}; holding out "
                    f"{num_eval} for eval leaves none to train on; lower data.eval_fraction or "
                    "set data.eval_tokens_path")
  return num_rows - num_eval


def _too_few_eval_rows(data_cfg, batch_size: int, seq_len: int) -> str:
  return (f"the held-out split of data.source={data_cfg.source} has fewer than one eval batch of "
          f"{batch_size} rows of {seq_len + 1} tokens; lower --config.data.eval_batch_size, or "
          "hold out more data (data.eval_fraction, or data.eval_tokens_path for tokens)")


def _validate_synthetic(data_cfg, seq_len: int, with_eval: bool) -> None:
  del seq_len, with_eval
  if data_cfg.synthetic_vocab_size < 2:
    raise DataError(f"data.synthetic_vocab_size={data_cfg.synthetic_vocab_size} must be >= 2")


_VALIDATORS = {"c4": _validate_c4, "text": _validate_text, "embedded": _validate_embedded,
               "tokens": _validate_tokens, "synthetic": _validate_synthetic}


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
    stream_index_H = step * self._batch_size + np.arange(*self._host)
    epoch_H, position_H = np.divmod(stream_index_H, len(self._rows_RxL1))
    row_H = np.empty_like(position_H)
    for epoch in np.unique(epoch_H):
      in_epoch = epoch_H == epoch
      row_H[in_epoch] = self._permutation(int(epoch))[position_H[in_epoch]]
    return gather_rows(self._rows_RxL1, row_H)


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


# --- packed rows of token streams ---------------------------------------------------------------


def _rows(stream_N: np.ndarray, row_len: int, what: str, min_rows: int = 1) -> np.ndarray:
  """A flat stream as rows [R, row_len] (a view; the ragged tail is dropped)."""
  num_rows = len(stream_N) // row_len
  if num_rows < min_rows:
    raise DataError(f"{what} has {len(stream_N)} tokens, fewer than one row of seq_len + 1 = "
                    f"{row_len}; use more data or a smaller --config.model.seq_len")
  return stream_N[:num_rows * row_len].reshape(num_rows, row_len)


def _split_rows(data_cfg, seq_len: int) -> dict[str, Callable[[], np.ndarray]]:
  """{"train", "validation"}: functions giving packed rows (validation built only when asked)."""
  source, row_len = data_cfg.source, seq_len + 1
  if source == "embedded":
    cache = data_common.cache_dir(data_cfg.cache_dir)
    streams = embedded_corpus.token_arrays(cache, data_cfg.eval_fraction)
  elif source == "text":
    streams = data_seqio.text_token_streams(data_cfg)
  else:
    return _token_file_rows(data_cfg, row_len)
  return {"train": lambda: _rows(streams["train"], row_len, f"the {source} train split"),
          "validation": lambda: _rows(streams["validation"], row_len, "", min_rows=0)}


def _token_file_rows(data_cfg, row_len: int) -> dict[str, Callable[[], np.ndarray]]:
  """Train rows and held-out rows: `eval_tokens_path`, else the last eval_fraction of rows."""
  all_RxL1 = _rows(data_common.load_tokens(data_cfg.tokens_path, data_cfg.tokens_dtype),
                   row_len, data_cfg.tokens_path)
  eval_path = data_cfg.get("eval_tokens_path", "")
  if eval_path:
    return {"train": lambda: all_RxL1, "validation": lambda: _rows(
        data_common.load_tokens(eval_path, data_cfg.tokens_dtype), row_len, "", min_rows=0)}
  num_train = _tokens_train_rows(data_cfg, len(all_RxL1), row_len)
  return {"train": lambda: all_RxL1[:num_train], "validation": lambda: all_RxL1[num_train:]}


# --- public entry points ----------------------------------------------------------------------


def make_train_iterator(data_cfg, seq_len: int, *, process_index: int = 0,
                        process_count: int = 1) -> BatchIterator:
  """This host's infinite stream of training batches, int32 [B / P, seq_len + 1]."""
  _validate(data_cfg, seq_len, process_count, with_eval=False)
  batch_size, seed, row_len = data_cfg.batch_size, int(data_cfg.seed), seq_len + 1
  host = data_common.host_rows(batch_size, process_index, process_count)
  info = {"source": data_cfg.source, "seed": seed, "batch_size": batch_size, "row_len": row_len}
  if data_cfg.source == "synthetic":
    return SyntheticIterator(vocab_size(data_cfg), batch_size, row_len, seed, host, info)
  if data_cfg.source == "c4":
    open_epoch = lambda epoch: data_seqio.c4_documents(
        data_cfg, "train", shuffle=True, seed=data_common.epoch_seed(seed, epoch))
    return StreamIterator(open_epoch, eos_id(data_cfg), batch_size, row_len, host, info)
  rows_RxL1 = _split_rows(data_cfg, seq_len)["train"]()
  if len(rows_RxL1) < batch_size:
    logging.warning("data: only %d training rows for a batch of %d; batches repeat rows",
                    len(rows_RxL1), batch_size)
  return RowsIterator(rows_RxL1, batch_size, seed, host, info)


def make_eval_batches(data_cfg, seq_len: int, *, process_index: int = 0,
                      process_count: int = 1) -> list[np.ndarray]:
  """The fixed held-out batches (this host's rows); the same for every seed and LR."""
  validate(data_cfg, seq_len, process_count=process_count)
  if not data_cfg.eval_batches:
    return []
  batch_size, row_len = _eval_batch_size(data_cfg), seq_len + 1
  host = slice(*data_common.host_rows(batch_size, process_index, process_count,
                                      "data.eval_batch_size"))
  if data_cfg.source == "synthetic":
    shape = (batch_size, row_len)
    return [synthetic_batch(vocab_size(data_cfg), shape, [_SYNTHETIC_EVAL_SEED, i])[host]
            for i in range(data_cfg.eval_batches)]
  global_batches = _eval_global_batches(data_cfg, seq_len, batch_size)
  if len(global_batches) < data_cfg.eval_batches:
    logging.warning("data: the held-out split gives %d eval batches of %d, not data."
                    "eval_batches=%d", len(global_batches), batch_size, data_cfg.eval_batches)
  return [batch[host] for batch in global_batches]


def _eval_batch_size(data_cfg) -> int:
  return data_cfg.eval_batch_size or data_cfg.batch_size


def _eval_global_batches(data_cfg, seq_len: int, batch_size: int) -> list[np.ndarray]:
  """Up to eval_batches full global batches of held-out rows, in order."""
  if data_cfg.source == "c4":
    batches = _c4_eval_batches(data_cfg, seq_len, batch_size)
  else:
    rows_RxL1 = _split_rows(data_cfg, seq_len)["validation"]()
    num = min(data_cfg.eval_batches, len(rows_RxL1) // batch_size)
    batches = [np.asarray(rows_RxL1[i * batch_size:(i + 1) * batch_size], np.int32)
               for i in range(num)]
  if not batches:
    raise DataError(_too_few_eval_rows(data_cfg, batch_size, seq_len))
  return batches


def _c4_eval_batches(data_cfg, seq_len: int, batch_size: int) -> list[np.ndarray]:
  """The C4 validation split, unshuffled, packed into batches."""
  docs = data_seqio.c4_documents(data_cfg, "validation", shuffle=False, seed=None)
  packer = data_common.RowPacker(docs, eos_id(data_cfg), seq_len + 1)
  batches = []
  for _ in range(data_cfg.eval_batches):
    try:
      batches.append(packer.take(batch_size))
    except StopIteration:
      break
  return batches
