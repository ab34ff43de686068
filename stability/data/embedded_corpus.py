"""The embedded corpus: docstrings of the Python standard library, on every machine with Python.

On first use the stdlib source folder is walked in sorted order, each `.py` file is parsed with
`ast` (nothing is imported), and every module / class / function docstring of at least
`MIN_CHARS` characters is cleaned with `inspect.cleandoc`. Exact duplicates are dropped (first
one kept). The documents go to `<cache>/stdlib-docstrings-v1-py3.X.Y.jsonl`, one JSON object
`{"text": ..., "where": "json/__init__.py:dumps"}` per line, so the file is the same on every
run of a given Python version. The byte-tokenized train / validation streams are cached next to
it as `.npy`. Every file is written to a temporary name and renamed into place, so a killed
first run leaves no half-written file behind. No TensorFlow is needed.
"""

import ast
import functools
import hashlib
import inspect
import json
import os
import sys
import sysconfig
import warnings
from typing import IO, Iterator

from absl import logging
import numpy as np

from stability.data import common as data_common

FORMAT_VERSION = 1
MIN_CHARS = 64
SKIPPED_DIRS = frozenset({"test", "tests", "idlelib", "site-packages", "dist-packages",
                          "__pycache__"})
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_root() -> str:
  """The folder holding the standard library's `.py` sources."""
  return sysconfig.get_paths()["stdlib"]


def corpus_name() -> str:
  """File stem of the corpus: the extraction format and the Python version."""
  version = ".".join(map(str, sys.version_info[:3]))
  return f"stdlib-docstrings-v{FORMAT_VERSION}-py{version}"


def source_files(root: str) -> Iterator[str]:
  """Relative paths of the `.py` files under `root`, sorted, skipping test/idlelib/site dirs."""
  for folder, dirs, files in os.walk(root):
    dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
    for name in sorted(files):
      if name.endswith(".py"):
        yield os.path.relpath(os.path.join(folder, name), root)


def _docstrings(node: ast.AST, qualname: str) -> Iterator[tuple[str, str]]:
  """(qualified name, cleaned docstring) of `node` and the definitions in it, in source order."""
  if isinstance(node, _DOC_NODES):
    doc = ast.get_docstring(node, clean=False)
    if doc:
      yield qualname, inspect.cleandoc(doc)
  for child in ast.iter_child_nodes(node):
    is_def = isinstance(child, _DOC_NODES[1:])
    yield from _docstrings(child, f"{qualname}.{child.name}".lstrip(".") if is_def else qualname)


def file_docstrings(source: bytes, filename: str) -> Iterator[tuple[str, str]]:
  """Docstrings of one source file; a file that does not parse gives none."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      tree = ast.parse(source, filename=filename)
  except (SyntaxError, ValueError):
    return
  yield from _docstrings(tree, "")


def extract_documents(root: str | None = None) -> list[dict[str, str]]:
  """The corpus documents `{"text", "where"}`, in a deterministic order."""
  root = root or stdlib_root()
  seen, docs = set(), []
  for rel_path in source_files(root):
    with open(os.path.join(root, rel_path), "rb") as f:
      source = f.read()
    for qualname, text in file_docstrings(source, rel_path):
      if len(text) < MIN_CHARS or text in seen or not _is_utf8_encodable(text):
        continue
      seen.add(text)
      docs.append({"text": text, "where": f"{rel_path}:{qualname}"})
  return docs


def _is_utf8_encodable(text: str) -> bool:
  try:
    text.encode("utf-8")
    return True
  except UnicodeEncodeError:  # lone surrogates written as escapes in the source
    return False


def _write_documents(f: IO[bytes], docs: list[dict[str, str]]) -> None:
  """One JSON object per line."""
  for doc in docs:
    f.write((json.dumps(doc, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))


def corpus_path(cache: str) -> str:
  return os.path.join(cache, corpus_name() + ".jsonl")


def ensure_corpus(cache: str, root: str | None = None) -> str:
  """The corpus file in `cache`, extracted (atomically) if it is not there yet."""
  path = corpus_path(cache)
  if os.path.exists(path):
    return path
  docs = extract_documents(root)
  if not docs:
    raise data_common.DataError(f"no docstrings found under {root or stdlib_root()}; the "
                                "embedded corpus needs the standard library's .py sources")
  with data_common.atomic_open(path) as f:
    _write_documents(f, docs)
  logging.info("embedded corpus: %d documents, %.2f MB -> %s", len(docs),
               os.path.getsize(path) / 1e6, path)
  return path


@functools.lru_cache(maxsize=4)
def fingerprint(cache: str) -> dict:
  """Which text this Python's corpus is: its name, document count and the SHA-256 of its file
  (equal hashes, the same training and eval data; another Python version usually differs)."""
  with open(ensure_corpus(cache), "rb") as f:
    content = f.read()
  return {"corpus": corpus_name(), "documents": content.count(b"\n"),
          "sha256": hashlib.sha256(content).hexdigest()}


def load_documents(path: str) -> list[str]:
  """The document texts of a corpus file."""
  with open(path, encoding="utf-8") as f:
    return [json.loads(line)["text"] for line in f]


def token_paths(cache: str, eval_fraction: float) -> dict[str, str]:
  """{split: path} of the byte-tokenized streams for this held-out fraction."""
  stem = os.path.join(cache, f"{corpus_name()}.heldout{eval_fraction:g}")
  return {split: f"{stem}.{split}.npy" for split in ("train", "validation")}


def ensure_token_files(cache: str, eval_fraction: float) -> dict[str, str]:
  """{split: .npy path} of uint16 byte ids, EOS after each document; built once per cache."""
  paths = token_paths(cache, eval_fraction)
  if all(os.path.exists(p) for p in paths.values()):
    return paths
  docs = load_documents(ensure_corpus(cache))
  for split, split_docs in data_common.split_documents(docs, eval_fraction).items():
    stream_N = data_common.byte_encode_documents(split_docs)
    data_common.atomic_save_npy(paths[split], stream_N)
    logging.info("embedded corpus: %s split, %d documents, %d tokens -> %s", split,
                 len(split_docs), len(stream_N), paths[split])
  return paths


def token_arrays(cache: str, eval_fraction: float) -> dict[str, np.ndarray]:
  """{split: read-only memmap of the token stream}."""
  return {split: np.load(path, mmap_mode="r")
          for split, path in ensure_token_files(cache, eval_fraction).items()}
