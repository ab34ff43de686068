"""Keeps the console readable: library chatter (orbax's per-save INFO lines) is dropped."""

import logging

_NOISY = ("/orbax/", "/tensorstore/", "/etils/")


class _DropLibraryInfo(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or not any(n in record.pathname for n in _NOISY)


def quiet_libraries() -> None:
  """Idempotent: drops INFO records of noisy libraries from the absl logger."""
  logger = logging.getLogger("absl")
  if not any(isinstance(f, _DropLibraryInfo) for f in logger.filters):
    logger.addFilter(_DropLibraryInfo())
