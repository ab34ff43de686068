"""The seqio sources: C4 from tfds (`C4Source`) and user text files (`TextSource`), tokenized
by seqio vocabularies.

TensorFlow, seqio, tfds and sentencepiece are imported inside the functions here, never at
module import, so `stability.data` works on machines without them.

Text files are read in Python, strictly as UTF-8: a file that is not valid UTF-8 is refused
with its name and the offset of the first bad byte (no silent replacement characters).
"""

import functools
import glob
import os
from typing import Iterator

from absl import logging
import numpy as np

from stability.data import common as data_common
from stability.data import source as data_source
from stability.data.common import DataError

TFDS_BUILD_HINT = ("build it once with `tfds build c4/en --data_dir=DIR` (or copy a prepared "
                   "copy there) and pass --config.data.c4.tfds_data_dir=DIR")
_CHUNK = 1 << 20  # ids per chunk of `C4Source.token_chunks`


def _import_tf_stack():
  """(tensorflow, seqio), or a DataError saying how to get them."""
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import seqio  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError(
        f"this data source needs tensorflow and seqio ({e}); install them with "
        "`pip install -e '.[tf]'`, or use --config.data.source=embedded|tokens|synthetic, "
        "which need no TensorFlow") from e
  return tf, seqio


def _import_sentencepiece():
  try:
    import sentencepiece  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError("SentencePiece vocabularies need the `sentencepiece` package: "
                    "`pip install -e '.[tf]'`") from e
  return sentencepiece


def read_bytes(path: str) -> bytes:
  """A local file, or a remote one (gs://...) through tf.io.gfile."""
  if "://" not in path:
    with open(os.path.expanduser(path), "rb") as f:
      return f.read()
  tf, _ = _import_tf_stack()
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


# --- vocabularies -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def sentencepiece_info(vocab_path: str, extra_ids: int, source: str) -> tuple[int, int]:
  """(vocab_size, eos_id) of a SentencePiece model file, as seqio would count them; `source`
  names the config group (`data.<source>.vocab_path`) in errors."""
  hint = f"point --config.data.{source}.vocab_path at a SentencePiece .model file"
  if source == "c4":
    hint += " (or train on the built-in corpus: --config=configs/base.py:data=embedded)"
  if not vocab_path:
    raise DataError(f"data.{source}.vocab_path is empty; {hint}")
  try:
    model_proto = read_bytes(vocab_path)
  except (OSError, DataError) as e:
    raise DataError(f"cannot read the vocabulary {vocab_path} ({e}); {hint}") from e
  except Exception as e:  # tf.errors.* from remote filesystems
    raise DataError(f"cannot read the vocabulary {vocab_path} ({type(e).__name__}: {e}); "
                    f"{hint}") from e
  processor = _import_sentencepiece().SentencePieceProcessor()
  try:
    processor.LoadFromSerializedProto(model_proto)
  except Exception as e:  # RuntimeError / protobuf DecodeError: not a model file
    raise DataError(f"{vocab_path} is not a loadable SentencePiece model ({e}); {hint}") from e
  return processor.GetPieceSize() + extra_ids, processor.eos_id()


# --- seqio tasks ------------------------------------------------------------------------------


def _task(name: str, source, vocabulary):
  """A seqio Task: "text" -> "targets" token ids (no EOS: packing appends it)."""
  tf, seqio = _import_tf_stack()
  return seqio.Task(
      name,
      source=source,
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey, key_map={"targets": "text"}),
          seqio.preprocessors.tokenize,
      ],
      output_features={"targets": seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32)})


def _task_documents(task, split: str, shuffle: bool, seed: int | None) -> Iterator[np.ndarray]:
  """Token documents of one pass over `split`."""
  dataset = task.get_dataset(sequence_length=None, split=split, shuffle=shuffle, seed=seed,
                             num_epochs=1, use_cached=False, try_in_mem_cache=False)
  for example in dataset.as_numpy_iterator():
    yield example["targets"]


# --- C4 ---------------------------------------------------------------------------------------


def check_tfds_prepared(tfds_name: str, data_dir: str) -> None:
  """Raises DataError unless the tfds dataset is prepared in `data_dir` (nothing is downloaded)."""
  _import_tf_stack()
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(tfds_name, data_dir=data_dir or None)
  except Exception as e:  # unknown name / version / config
    raise DataError(f"data.c4.tfds_name={tfds_name!r} is not a tfds dataset ({e}); the paper "
                    "uses c4/en:3.1.0") from e
  if not builder.is_prepared():
    raise DataError(f"tfds dataset {tfds_name} is not prepared in {builder.data_dir}; "
                    f"{TFDS_BUILD_HINT}")


@functools.lru_cache(maxsize=4)
def _c4_task(tfds_name: str, data_dir: str, vocab_path: str, extra_ids: int):
  _, seqio = _import_tf_stack()
  check_tfds_prepared(tfds_name, data_dir)
  source = seqio.TfdsDataSource(tfds_name=tfds_name, tfds_data_dir=data_dir or None,
                                read_only=True)  # read_only: never download
  vocab = seqio.SentencePieceVocabulary(vocab_path, extra_ids=extra_ids)
  return _task("stability_c4", source, vocab)


class C4Source(data_source.Source):
  """C4 from tfds + the T5 SentencePiece vocabulary, streamed; `data.c4`."""

  name = "c4"

  def vocab(self) -> tuple[int, int]:
    return sentencepiece_info(self.own.vocab_path, self.own.vocab_extra_ids, self.name)

  def check(self, seq_len: int) -> None:
    self.vocab()
    check_tfds_prepared(self.own.tfds_name, self.own.tfds_data_dir)

  def documents(self, split: str, *, shuffle: bool, seed: int | None) -> Iterator[np.ndarray]:
    """One pass over a C4 split as token documents; the order is a function of `seed`."""
    c4 = self.own
    self.vocab()
    task = _c4_task(c4.tfds_name, c4.tfds_data_dir, c4.vocab_path, c4.vocab_extra_ids)
    try:
      yield from _task_documents(task, split, shuffle, seed)
    except AssertionError as e:  # tfds: "could not find data in ..."
      raise DataError(f"cannot read {c4.tfds_name} split {split!r} ({e}); "
                      f"{TFDS_BUILD_HINT}") from e

  def train_iterator(self, seq_len: int, host: tuple[int, int]) -> data_source.BatchIterator:
    seed = int(self.cfg.seed)
    open_epoch = lambda epoch: self.documents(
        "train", shuffle=True, seed=data_common.epoch_seed(seed, epoch))
    return data_source.StreamIterator(open_epoch, self.eos_id, self.cfg.batch_size, seq_len + 1,
                                      host, self.info(seq_len))

  def eval_batches(self, seq_len: int, batch_size: int) -> list[np.ndarray]:
    """The validation split, unshuffled, packed into batches."""
    docs = self.documents("validation", shuffle=False, seed=None)
    packer = data_common.RowPacker(docs, self.eos_id, seq_len + 1)
    batches = []
    for _ in range(self.cfg.eval_batches):
      try:
        batches.append(packer.take(batch_size))
      except StopIteration:
        break
    return batches

  def token_chunks(self, split: str) -> Iterator[np.ndarray]:
    eos_1 = np.array([self.eos_id], np.int32)
    pieces, size = [], 0
    for doc_T in self.documents(split, shuffle=False, seed=None):
      if len(doc_T):
        pieces += [doc_T, eos_1]
        size += len(doc_T) + 1
      if size >= _CHUNK:
        yield np.concatenate(pieces)
        pieces, size = [], 0
    if pieces:
      yield np.concatenate(pieces)


# --- text files -------------------------------------------------------------------------------


def text_files(patterns: str) -> list[str]:
  """The files matched by comma-separated globs: sorted within a glob, duplicates dropped."""
  files = []
  for pattern in (p.strip() for p in patterns.split(",")):
    if not pattern:
      continue
    matches = sorted(f for f in glob.glob(os.path.expanduser(pattern), recursive=True)
                     if os.path.isfile(f))
    if not matches:
      raise DataError(f"data.text.paths pattern {pattern!r} matches no files; fix "
                      "--config.data.text.paths (comma-separated globs of UTF-8 text files)")
    files += matches
  if not files:
    raise DataError("data.source=text needs --config.data.text.paths=<comma-separated globs of "
                    "UTF-8 text files>")
  return list(dict.fromkeys(files))


def _has_text(path: str, chunk: int = 1 << 16) -> bool:
  """Whether a file holds anything but whitespace (and a UTF-8 BOM); reads only until it does."""
  with open(path, "rb") as f:
    while block := f.read(chunk):
      if block.replace(b"\xef\xbb\xbf", b"").strip():
        return True
  return False


def _decode_utf8(path: str, raw: bytes) -> str:
  """The text of a file; non-UTF-8 bytes are refused with the file name and offset."""
  try:
    return raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise DataError(
        f"{path} is not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 4]!r}); the text "
        "source reads UTF-8 only: convert the file (e.g. `iconv -f latin1 -t utf-8`) or drop "
        "it from --config.data.text.paths") from e


def file_documents(path: str, doc_per: str) -> list[str]:
  """The documents of one file: each non-blank line, or the whole file if not blank."""
  text = _decode_utf8(path, read_bytes(path))
  if doc_per == "file":
    return [text] if text.strip() else []
  return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


_TEXT_STREAMS: dict[tuple, dict[str, np.ndarray]] = {}


class TextSource(data_source.RowSource):
  """Your UTF-8 text files, held out by document-index hash, bytes or SentencePiece ids;
  tokenized once per process; `data.text`."""

  name = "text"

  @property
  def uses_sentencepiece(self) -> bool:
    return self.own.vocab == "sentencepiece"

  def vocab(self) -> tuple[int, int]:
    if self.uses_sentencepiece:
      return sentencepiece_info(self.own.vocab_path, self.own.vocab_extra_ids, self.name)
    return data_common.BYTE_VOCAB_SIZE, data_common.BYTE_EOS_ID

  @property
  def known_vocab_size(self) -> int | None:
    return None if self.uses_sentencepiece else data_common.BYTE_VOCAB_SIZE

  def check(self, seq_len: int) -> None:
    text = self.own
    if text.doc_per not in ("line", "file"):
      raise DataError(f"data.text.doc_per={text.doc_per!r}; allowed: line, file")
    if text.vocab not in ("bytes", "sentencepiece"):
      raise DataError(f"data.text.vocab={text.vocab!r}; allowed: bytes, sentencepiece")
    files = text_files(text.paths)
    if self.uses_sentencepiece:
      self.vocab()
    if not any(_has_text(path) for path in files):
      raise DataError(f"the text corpus is empty: the {len(files)} file(s) matched by "
                      f"data.text.paths={text.paths!r} hold only blank lines; fix "
                      "--config.data.text.paths")

  def documents(self) -> dict[str, list[str]]:
    """{"train", "validation"} documents of the corpus, held out by document-index hash."""
    text = self.own
    if text.doc_per not in ("line", "file"):
      raise DataError(f"data.text.doc_per={text.doc_per!r}; allowed: line, file")
    files = text_files(text.paths)
    docs = [doc for path in files for doc in file_documents(path, text.doc_per)]
    if not docs:
      raise DataError(f"the text corpus is empty: {len(files)} file(s) matched by "
                      f"data.text.paths={text.paths!r} hold no non-blank "
                      f"{'lines' if text.doc_per == 'line' else 'files'}")
    return data_common.split_documents(docs, self.cfg.eval_fraction)

  def token_streams(self) -> dict[str, np.ndarray]:
    """{split: flat token stream with EOS after each document}; tokenized once per process."""
    key = self._cache_key()
    if key not in _TEXT_STREAMS:
      _TEXT_STREAMS.clear()
      _TEXT_STREAMS[key] = self._tokenize()
    return _TEXT_STREAMS[key]

  def _cache_key(self) -> tuple:
    text = self.own
    stats = tuple((p, os.stat(p).st_size, os.stat(p).st_mtime_ns) for p in text_files(text.paths))
    vocab = ((text.vocab_path, text.vocab_extra_ids) if self.uses_sentencepiece else "bytes")
    return stats, text.doc_per, self.cfg.eval_fraction, vocab

  def seqio_vocabulary(self):
    _, seqio = _import_tf_stack()
    if self.uses_sentencepiece:
      self.vocab()  # clear errors
      return seqio.SentencePieceVocabulary(self.own.vocab_path,
                                           extra_ids=self.own.vocab_extra_ids)
    return seqio.ByteVocabulary()

  def _tokenize(self) -> dict[str, np.ndarray]:
    tf, seqio = _import_tf_stack()
    docs = self.documents()

    def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None):
      del shuffle_files, seed  # the order is the files' order; packing rows are shuffled later
      return tf.data.Dataset.from_tensor_slices(
          {"text": tf.constant(docs[split], dtype=tf.string, shape=[len(docs[split])])})

    vocab = self.seqio_vocabulary()
    task = _task("stability_text", seqio.FunctionDataSource(dataset_fn, splits=tuple(docs)), vocab)
    streams = {}
    for split in docs:
      streams[split] = data_common.concat_documents(
          _task_documents(task, split, shuffle=False, seed=None), vocab.eos_id,
          data_common.token_dtype(vocab.vocab_size))
      logging.info("text corpus: %s split, %d documents, %d tokens", split, len(docs[split]),
                   len(streams[split]))
    return streams
