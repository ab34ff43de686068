"""Writes the result folder of one run (the format: `stability.result_format`).

Only process 0 writes. Files that are rewritten are written atomically (tmp + rename).
"""

import errno
import json
import os
from typing import Any

from etils import epath

from stability import result_format as fmt


class WorkdirError(OSError):
  """The run folder cannot be created or written; the message names it."""


def _json_value(x):
  """numpy / JAX scalars -> Python; NaN and Infinity stay (json writes them, analysis reads them)."""
  return x.item() if hasattr(x, "item") else x


def write_json_atomic(path: epath.Path, obj: Any) -> None:
  tmp = path.parent / f".{path.name}.tmp"
  tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_value) + "\n")
  tmp.replace(path)


class RunFiles:
  """Reads and writes one run folder."""

  def __init__(self, workdir, *, writer: bool = True):
    self.dir = epath.Path(workdir)
    self.writer = writer
    if writer:
      self._make_writable()

  def _make_writable(self) -> None:
    """Creates the run folder and writes a probe file: a bad --workdir fails here, clearly."""
    probe = self.dir / f".write-probe-{os.getpid()}"
    try:
      self.dir.mkdir(parents=True, exist_ok=True)
      probe.write_text("")
      probe.unlink()
    except OSError as e:
      reason = e.strerror or str(e)
      if e.errno == errno.ENOTDIR:
        reason = "a folder on its path is a file"
      elif e.errno == errno.EEXIST and not self.dir.is_dir():
        reason = "it is a file, not a folder"
      raise WorkdirError(
          e.errno, f"cannot write the run folder {self.dir} ({reason}); pass a --workdir in a "
          "writable place with free space") from e

  @property
  def config_path(self):
    return self.dir / fmt.CONFIG

  def existing_config(self) -> dict | None:
    return fmt.read_json(self.config_path)

  def write_config(self, config: dict) -> None:
    if self.writer:
      write_json_atomic(self.config_path, config)

  def append(self, name: str, row: dict) -> None:
    if self.writer:
      line = json.dumps({k: _json_value(v) for k, v in row.items()}, sort_keys=True)
      with (self.dir / name).open("a") as f:
        f.write(line + "\n")

  def append_metrics(self, row: dict) -> None:
    self.append(fmt.METRICS, row)

  def append_eval(self, row: dict) -> None:
    self.append(fmt.EVAL, row)

  def truncate(self, *, metrics_before: int, evals_through: int) -> None:
    """On resume: drops rows that the restored run will write again (and torn lines)."""
    if not self.writer:
      return
    for name, keep in ((fmt.METRICS, lambda s: s < metrics_before),
                       (fmt.EVAL, lambda s: s <= evals_through)):
      path = self.dir / name
      if path.exists():
        rows = [r for r in fmt.read_jsonl(path) if keep(r.get("step", -1))]
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        tmp.replace(path)

  def read_summary(self) -> dict | None:
    """The summary; None when there is none yet or it is torn."""
    try:
      return fmt.read_json(self.dir / fmt.SUMMARY)
    except ValueError:
      return None

  def write_summary(self, summary: dict) -> None:
    assert summary.get("status") in fmt.STATUSES, summary.get("status")
    if self.writer:
      write_json_atomic(self.dir / fmt.SUMMARY, summary)
