r"""Throughput of the data pipeline: batches/s for the demo shape and a paper-size batch.

  python -m launch.bench_data [--batch_size=16 --seq_len=128] \
      [--paper_batch_size=256 --paper_seq_len=512] [--seconds=3] [--skip_text]

Rows: embedded at the demo shape and at the paper shape; tokens (a .npy written from the
embedded corpus by stability.tools.tokenize, memory-mapped); tokens-big (a raw file of random ids
larger than the CPU caches, 400 MB by default); text (the embedded documents as text
files, one per line, through seqio; needs TensorFlow); synthetic. `setup_s` is the time to the
first batch (corpus extraction / tokenization included when the cache is cold); `batches/s` is
the steady state after it, on one process.
"""

import os
import tempfile
import time
from typing import Iterator

from absl import app
from absl import flags
import numpy as np

from configs import base
from stability import data
from stability.tools import tokenize

_BATCH = flags.DEFINE_integer("batch_size", 16, "Demo batch size (sequences).")
_SEQ = flags.DEFINE_integer("seq_len", 128, "Demo sequence length.")
_PAPER_BATCH = flags.DEFINE_integer("paper_batch_size", 256, "Paper batch size (sequences).")
_PAPER_SEQ = flags.DEFINE_integer("paper_seq_len", 512, "Paper sequence length.")
_SECONDS = flags.DEFINE_float("seconds", 3.0, "Steady-state time per row of the table.")
_CACHE = flags.DEFINE_string("cache_dir", "", "data.embedded.cache_dir; '' = a fresh (cold) "
                             "temporary one.")
_LARGE_TOKENS = flags.DEFINE_integer(
    "large_tokens", 200_000_000, "Size of a random uint16 token file (bigger than CPU caches) "
    "for a second tokens row; 0 = skip.")
_SKIP_TEXT = flags.DEFINE_bool("skip_text", False, "Skip the text source (needs TensorFlow).")


def data_cfg(source: str, batch_size: int, cache: str, **fields):
  """The data config of `source`; `fields` go to its own group `data.<source>`."""
  cfg = base.get_config(f"data={source}").data
  cfg.update({"batch_size": batch_size, "embedded": {"cache_dir": cache}})
  cfg[source].update(fields)
  return cfg


def measure(cfg, seq_len: int, seconds: float) -> dict[str, float]:
  """Time to the first batch, then batches/s over about `seconds`."""
  start = time.perf_counter()
  iterator = data.make_train_iterator(cfg, seq_len)
  batch = next(iterator)
  setup_s = time.perf_counter() - start
  assert batch.shape == (cfg.batch_size, seq_len + 1) and batch.dtype == np.int32
  count, start = 0, time.perf_counter()
  while count < 3 or time.perf_counter() - start < seconds:
    next(iterator)
    count += 1
  rate = count / (time.perf_counter() - start)
  return {"setup_s": setup_s, "batches_s": rate, "tokens_s": rate * cfg.batch_size * seq_len}


def write_text_corpus(folder: str, cache: str) -> str:
  """The embedded documents as a text file, one document per line."""
  docs = data.embedded_documents(cache)
  path = os.path.join(folder, "stdlib_docstrings.txt")
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(" ".join(doc.split()) + "\n" for doc in docs)
  return path


def write_random_tokens(folder: str, num_tokens: int) -> str:
  """A raw uint16 file of random ids, written in chunks."""
  path = os.path.join(folder, "random.bin")
  rng = np.random.default_rng(0)
  with open(path, "wb") as f:
    for start in range(0, num_tokens, 1 << 24):
      size = min(1 << 24, num_tokens - start)
      f.write(rng.integers(0, 32101, size=size, dtype=np.uint16).tobytes())
  return path


def cases(folder: str, cache: str) -> Iterator[tuple[str, object, int]]:
  """(name, data config, seq_len) for each row of the table, built as they are reached."""
  demo_b, demo_l = _BATCH.value, _SEQ.value
  paper_b, paper_l = _PAPER_BATCH.value, _PAPER_SEQ.value
  yield "embedded", data_cfg("embedded", demo_b, cache), demo_l  # first: cold cache
  yield "embedded", data_cfg("embedded", paper_b, cache), paper_l
  tokens_path = os.path.join(folder, "embedded_train.npy")
  tokenize.write_token_file(data_cfg("embedded", paper_b, cache), tokens_path, "train")
  yield "tokens", data_cfg("tokens", paper_b, cache, path=tokens_path), paper_l
  if _LARGE_TOKENS.value:
    large_path = write_random_tokens(folder, _LARGE_TOKENS.value)
    yield "tokens-big", data_cfg("tokens", paper_b, cache, path=large_path,
                                 vocab_size=32101), paper_l
  yield "synthetic", data_cfg("synthetic", paper_b, cache), paper_l
  if not _SKIP_TEXT.value:
    text_path = write_text_corpus(folder, cache)
    yield "text", data_cfg("text", paper_b, cache, paths=text_path), paper_l


def main(argv: list[str]) -> None:
  del argv
  print(f"{'source':<10} {'batch':>5} x {'seq+1':<5} {'setup_s':>8} {'batches/s':>10} "
        f"{'Mtokens/s':>10}")
  with tempfile.TemporaryDirectory() as folder:
    cache = _CACHE.value or os.path.join(folder, "cache")
    for name, cfg, seq_len in cases(folder, cache):
      result = measure(cfg, seq_len, _SECONDS.value)
      print(f"{name:<10} {cfg.batch_size:>5} x {seq_len + 1:<5} {result['setup_s']:>8.2f} "
            f"{result['batches_s']:>10.1f} {result['tokens_s'] / 1e6:>10.2f}", flush=True)


if __name__ == "__main__":
  app.run(main)
