r"""Writes a flat token file from the c4 / text / embedded source, for data.source=tokens.

  python -m stability.tools.tokenize --config=configs/base.py:data=embedded \
      --output=/tmp/tokens.npy [--split=train|validation] [--max_tokens=N]

The file holds the split's documents in the source's own (unshuffled) order, each tokenized
and followed by EOS, cut after `max_tokens` ids (0 = all). `.npy` output, or raw ids for any
other suffix (`.bin`), uint16 when the vocabulary fits, else uint32. A sidecar
`<output>.json` records vocab_size and eos_id, which data.source=tokens reads. Then train with
`--config.data.source=tokens --config.data.tokens.path=<output>` (and the validation split
as --config.data.tokens.eval_path).
"""

import json
import os
import shutil
import tempfile
from typing import IO, Iterator

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np

from stability import config_schema
from stability import data
from stability import validation

_COPY_CHUNK = 1 << 20


def define_flags() -> None:
  """The command-line flags, defined only when this runs as a program: importing the module
  (tests, other tools) defines none, so it never clashes with another tool's `--config`."""
  global _CONFIG, _OUTPUT, _SPLIT, _MAX_TOKENS
  # Unknown fields are let through here so that validation can name the known ones.
  _CONFIG = config_flags.DEFINE_config_file("config", None, "ml-collections config file.",
                                            lock_config=False, accept_new_attributes=True)
  _OUTPUT = flags.DEFINE_string("output", None, "Token file to write (.npy or .bin).")
  _SPLIT = flags.DEFINE_enum("split", "train", ["train", "validation"], "Split to tokenize.")
  _MAX_TOKENS = flags.DEFINE_integer("max_tokens", 0, "Stop after this many ids; 0 = all.")


def write_token_file(data_cfg, output: str, split: str = "train", max_tokens: int = 0) -> dict:
  """Writes the token file (atomically) and its `.json` sidecar; returns the sidecar."""
  source = data.validate(data_cfg, seq_len=1)
  vocab = source.vocab_size
  dtype = data.token_dtype(vocab)
  chunks = source.token_chunks(split)
  if output.endswith(".npy"):
    num_tokens = _write_npy(chunks, output, dtype, max_tokens)
  else:
    with data.atomic_open(output) as f:
      num_tokens = _write_raw(chunks, f, dtype, max_tokens)
  meta = {"vocab_size": vocab, "eos_id": source.eos_id, "dtype": dtype.name,
          "num_tokens": num_tokens, "source": data_cfg.source, "split": split}
  with data.atomic_open(output + ".json", "w") as f:
    json.dump(meta, f, indent=1)
  logging.info("wrote %d tokens (%s) of %s/%s to %s", num_tokens, dtype.name,
               data_cfg.source, split, output)
  return meta


def _write_raw(chunks: Iterator[np.ndarray], f: IO[bytes], dtype: np.dtype, max_tokens: int
               ) -> int:
  """Writes up to `max_tokens` (0 = all) ids as raw `dtype`; returns how many."""
  num_tokens = 0
  for chunk_N in chunks:
    if max_tokens:
      chunk_N = chunk_N[:max_tokens - num_tokens]
    f.write(np.asarray(chunk_N, dtype).tobytes())
    num_tokens += len(chunk_N)
    if max_tokens and num_tokens >= max_tokens:
      break
  if not num_tokens:
    raise data.DataError("the split produced no tokens")
  return num_tokens


def _write_npy(chunks: Iterator[np.ndarray], output: str, dtype: np.dtype, max_tokens: int
               ) -> int:
  """Streams the ids to an unnamed temporary file, then writes header + ids (atomically)."""
  with tempfile.TemporaryFile(dir=os.path.dirname(os.path.abspath(output))) as raw:
    num_tokens = _write_raw(chunks, raw, dtype, max_tokens)
    raw.seek(0)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
              "shape": (num_tokens,)}
    with data.atomic_open(output) as out:
      np.lib.format.write_array_header_1_0(out, header)
      shutil.copyfileobj(raw, out, _COPY_CHUNK)
  return num_tokens


def main(argv: list[str]) -> None:
  del argv
  if _CONFIG.value is None or not _OUTPUT.value:
    raise app.UsageError("--config and --output are required")
  validation.check_known_fields(_CONFIG.value, config_schema.default_config())
  write_token_file(_CONFIG.value.data, _OUTPUT.value, _SPLIT.value, _MAX_TOKENS.value)


if __name__ == "__main__":
  define_flags()
  app.run(main)
