"""Packed int32 training batches and a fixed eval set, from five sources (config.data.source).

  c4         seqio Task over tfds `c4/en` + the T5 SentencePiece vocabulary (needs TensorFlow)
  text       your UTF-8 text files through a seqio Task; bytes or SentencePiece (needs TensorFlow)
  embedded   docstrings of the Python standard library, byte ids; the demo / test default
  tokens     a flat file of token ids (.npy or raw .bin), memory-mapped; fastest for grids
  synthetic  seeded random ids, for benchmarks and smoke tests

Each is a `source.Source` in `SOURCES` (`local.py`, `seqio.py`), made from the data config: the
shared fields (batch_size, seed, eval_*) and its own group `data.<source>`
(stability/config_schema.py). `validate` checks the config once at start-up and returns the
source; `make_train_iterator` and `make_eval_batches` take the config or that source and check
nothing again.

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

from absl import logging
import numpy as np

from stability.data import common as data_common
from stability.data import embedded_corpus
from stability.data import seqio as data_seqio  # imports TensorFlow lazily, inside its functions
from stability.data import source as data_source
from stability.data.common import DataError, atomic_open, token_dtype
from stability.data.local import EmbeddedSource, SyntheticSource, TokensSource
from stability.data.source import BatchIterator, Source


# The public API: launch/, the tools and provenance use these names and nothing below the package.
__all__ = ["BatchIterator", "DataError", "SOURCES", "Source", "EmbeddedSource", "SyntheticSource",
           "TokensSource", "atomic_open", "embedded_corpus_record", "embedded_documents", "eos_id",
           "make_eval_batches", "make_train_iterator", "source_for", "token_dtype", "validate",
           "vocab_size"]

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
