"""Pieces of the data pipeline that every source shares; numpy only, no TensorFlow.

- `DataError`: bad input, with a message that says what is wrong and how to fix it.
- byte vocabulary: ids identical to `seqio.ByteVocabulary` (0 pad, 1 eos, 2 unk, byte b -> b + 3).
- packing: documents -> one flat stream with EOS after each document -> rows of seq_len + 1.
- deterministic held-out split of documents, host slices of a global batch, atomic file writes.
"""

import contextlib
import hashlib
import os
import tempfile
from typing import IO, Iterable, Iterator, Sequence

import numpy as np

BYTE_VOCAB_SIZE = 259  # 3 special ids + 256 bytes (seqio.ByteVocabulary with no extra ids)
BYTE_OFFSET = 3
PAD_ID = 0
BYTE_EOS_ID = 1


class DataError(ValueError):
  """Bad data input; the message says what is wrong and how to fix it."""


# --- byte vocabulary --------------------------------------------------------------------------


def byte_encode(text: str) -> np.ndarray:
  """`text` as seqio.ByteVocabulary ids (UTF-8 bytes + 3), int32, no EOS."""
  return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + BYTE_OFFSET


def byte_decode(ids: Sequence[int]) -> str:
  """Inverse of `byte_encode`; special ids are dropped, bad UTF-8 becomes U+FFFD."""
  ids_N = np.asarray(ids)
  ids_N = ids_N[(ids_N >= BYTE_OFFSET) & (ids_N < BYTE_VOCAB_SIZE)]
  return (ids_N - BYTE_OFFSET).astype(np.uint8).tobytes().decode("utf-8", errors="replace")


def byte_encode_documents(docs: Sequence[str]) -> np.ndarray:
  """Documents as one uint16 byte-id stream with EOS after each (vectorised)."""
  encoded = [doc.encode("utf-8") for doc in docs]
  lengths_C = np.array([len(e) + 1 for e in encoded], np.int64)
  stream_N = np.empty(int(lengths_C.sum()), np.uint16)
  is_eos_N = np.zeros(stream_N.shape, bool)
  is_eos_N[np.cumsum(lengths_C) - 1] = True
  stream_N[~is_eos_N] = np.frombuffer(b"".join(encoded), np.uint8).astype(np.uint16) + BYTE_OFFSET
  stream_N[is_eos_N] = BYTE_EOS_ID
  return stream_N


# --- packing ----------------------------------------------------------------------------------


def token_dtype(vocab_size: int) -> np.dtype:
  """The smallest unsigned dtype that holds ids < vocab_size."""
  return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def concat_documents(docs: Iterable[np.ndarray], eos_id: int, dtype: np.dtype) -> np.ndarray:
  """Token documents -> one flat stream with `eos_id` after each; empty documents are skipped."""
  pieces = []
  eos_1 = np.array([eos_id], dtype)
  for doc_T in docs:
    if len(doc_T):
      pieces += [np.asarray(doc_T, dtype), eos_1]
  return np.concatenate(pieces) if pieces else np.zeros([0], dtype)


class RowPacker:
  """Streams token documents into rows of exactly `row_len` tokens, EOS after each document."""

  def __init__(self, docs: Iterator[np.ndarray], eos_id: int, row_len: int):
    self._docs = docs
    self._eos_1 = np.array([eos_id], np.int32)
    self._row_len = row_len
    self._pieces: list[np.ndarray] = []
    self._buffered = 0

  def take(self, num_rows: int) -> np.ndarray:
    """The next `num_rows` rows, int32 [num_rows, row_len]; StopIteration when the docs run out."""
    needed = num_rows * self._row_len
    while self._buffered < needed:
      doc_T = np.asarray(next(self._docs), np.int32)
      if len(doc_T):
        self._pieces += [doc_T, self._eos_1]
        self._buffered += len(doc_T) + 1
    stream_N = np.concatenate(self._pieces)
    self._pieces = [stream_N[needed:]]
    self._buffered = len(stream_N) - needed
    return stream_N[:needed].reshape(num_rows, self._row_len)


# --- splits and hosts -------------------------------------------------------------------------


def is_heldout(doc_index: int, eval_fraction: float) -> bool:
  """Deterministic held-out membership of document `doc_index` (a hash, not a seed)."""
  digest = hashlib.blake2b(str(doc_index).encode(), digest_size=8).digest()
  return int.from_bytes(digest, "little") / 2.0**64 < eval_fraction


def split_documents(docs: Sequence, eval_fraction: float) -> dict[str, list]:
  """{"train": [...], "validation": [...]} by hashing each document's index."""
  out = {"train": [], "validation": []}
  for i, doc in enumerate(docs):
    out["validation" if is_heldout(i, eval_fraction) else "train"].append(doc)
  return out


def host_rows(batch_size: int, process_index: int, process_count: int, what: str = "data.batch_size"
              ) -> tuple[int, int]:
  """Rows [lo, hi) of each global batch that host `process_index` of `process_count` reads."""
  if process_count < 1 or not 0 <= process_index < process_count:
    raise DataError(f"process_index={process_index} is not in [0, process_count={process_count})")
  if batch_size % process_count:
    raise DataError(
        f"{what}={batch_size} (global, in sequences) is not divisible by the {process_count} "
        f"hosts; set --config.{what} to a multiple of {process_count}")
  per_host = batch_size // process_count
  return process_index * per_host, (process_index + 1) * per_host


def epoch_seed(seed: int, epoch: int) -> int:
  """A 31-bit seed for epoch `epoch` of a run seeded `seed` (distinct pairs -> distinct seeds)."""
  return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


# --- files ------------------------------------------------------------------------------------


def cache_dir(configured: str) -> str:
  """`data.embedded.cache_dir`, else $STABILITY_CACHE, else ~/.cache/stability (created)."""
  path = configured or os.environ.get("STABILITY_CACHE") or "~/.cache/stability"
  path = os.path.abspath(os.path.expanduser(path))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise DataError(f"cannot create the data cache folder {path} ({e}); set --config.data."
                    "embedded.cache_dir (or $STABILITY_CACHE) to a writable folder") from e
  return path


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO]:
  """Writes to a temporary file beside `path` and renames it into place only on success."""
  folder, name = os.path.split(os.path.abspath(path))
  fd, tmp_path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
  try:
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; caches are shared
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp_path, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp_path)
    raise


def atomic_save_npy(path: str, array: np.ndarray) -> None:
  """`np.save` through `atomic_open`."""
  with atomic_open(path) as f:
    np.save(f, array, allow_pickle=False)


_TOKENS_FIX = ("write one with `python -m stability.tools.tokenize --output=...` or fix "
               "--config.data.tokens.path")


def load_tokens(path: str, raw_dtype: str = "uint16") -> np.ndarray:
  """A flat token file as a read-only memmap: `.npy`, or raw ids of `raw_dtype`."""
  if not os.path.isfile(path):
    raise DataError(f"token file {path} does not exist; {_TOKENS_FIX}")
  if path.endswith(".npy"):
    try:
      tokens_N = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
      raise DataError(f"{path} is not a readable .npy file ({e}); {_TOKENS_FIX}") from e
  else:
    try:
      dtype = np.dtype(raw_dtype)
    except TypeError as e:
      raise DataError(f"data.tokens.dtype={raw_dtype!r} is not a numpy dtype; use uint16 "
                      "or uint32") from e
    if os.path.getsize(path) == 0:
      raise DataError(f"token file {path} is empty; {_TOKENS_FIX}")
    if os.path.getsize(path) % dtype.itemsize:
      raise DataError(f"{path} has {os.path.getsize(path)} bytes, not a multiple of "
                      f"{dtype.itemsize} ({dtype}); is --config.data.tokens.dtype right?")
    tokens_N = np.memmap(path, dtype=dtype, mode="r")
  if tokens_N.ndim != 1 or tokens_N.dtype.kind not in "iu":
    raise DataError(f"{path} holds {tokens_N.dtype} of shape {tokens_N.shape}, not a flat (1-D) "
                    f"array of integer token ids; {_TOKENS_FIX}")
  if not len(tokens_N):
    raise DataError(f"token file {path} is empty; {_TOKENS_FIX}")
  return tokens_N


def max_token_id(tokens_N: np.ndarray, chunk: int = 1 << 24) -> int:
  """The largest id in a (possibly huge, memmapped) token array, read in chunks."""
  return max(int(tokens_N[i:i + chunk].max()) for i in range(0, len(tokens_N), chunk))

