"""SIGTERM heard at once, on a thread, even while the main thread waits inside the runtime.

A Python signal handler runs only when the main thread next executes Python, which a process
blocked in a collective never does. `Listener` installs a handler together with Python's wakeup
fd: the signal writes a byte there immediately, and a thread reading it calls `on_sigterm`.

Where a C handler already owns SIGTERM (JAX's preemption notifier, in a job of several
processes), the listener calls it for every SIGTERM, so the notifier still sees each one, and puts
it back on exit. Linux and macOS: `struct sigaction` starts with the handler there.
"""

import ctypes
import logging
import signal
import socket
import threading
from typing import Callable

_SIGACTION_BYTES = 512  # larger than struct sigaction on every libc


class _CHandler:
  """The C-level handler installed for a signal, to call from a thread and to put back."""

  def __init__(self, signum: int):
    self._libc = ctypes.CDLL(None, use_errno=True)
    self._signum = signum
    self._saved = ctypes.create_string_buffer(_SIGACTION_BYTES)
    if self._libc.sigaction(signum, None, self._saved) != 0:
      raise OSError(ctypes.get_errno(), f"sigaction({signum})")
    address = ctypes.c_void_p.from_buffer(self._saved).value or 0
    self.function = (ctypes.CFUNCTYPE(None, ctypes.c_int)(address)
                     if address not in (signal.SIG_DFL, signal.SIG_IGN) else None)

  def restore(self) -> None:
    self._libc.sigaction(self._signum, self._saved, None)


class Listener:
  """Calls `on_sigterm()` on a thread for each SIGTERM while open (a context manager).

  Only from the main thread (elsewhere signals cannot be set, and it does nothing).
  """

  def __init__(self, on_sigterm: Callable[[], None]):
    self._on_sigterm = on_sigterm
    self._active = False

  def __enter__(self) -> "Listener":
    if threading.current_thread() is not threading.main_thread():
      return self
    # A handler installed from C after Python started (JAX's) is invisible to signal.getsignal,
    # which then still says SIG_DFL: ask the OS, unless a Python handler owns the signal.
    self._python_handler = callable(signal.getsignal(signal.SIGTERM))
    self._c_handler = None if self._python_handler else _CHandler(signal.SIGTERM)
    self._reader, self._writer = socket.socketpair()
    self._writer.setblocking(False)
    self._previous_handler = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
    self._thread = threading.Thread(target=self._listen, name="stability-sigterm", daemon=True)
    self._thread.start()
    self._active = True
    return self

  def __exit__(self, *exc) -> None:
    if not self._active:
      return
    signal.set_wakeup_fd(self._previous_fd)
    signal.signal(signal.SIGTERM, self._previous_handler)  # Python's own record of it
    if self._c_handler is not None:
      self._c_handler.restore()  # what the OS had, a C handler included
    self._writer.close()  # the reader sees the end and the thread returns
    self._thread.join()
    self._reader.close()
    self._active = False

  def _listen(self) -> None:
    while data := self._reader.recv(64):
      for signum in data:
        if signum != signal.SIGTERM:
          continue
        if self._c_handler is not None and self._c_handler.function is not None:
          self._c_handler.function(signal.SIGTERM)
        try:
          self._on_sigterm()
        except Exception:  # a listener must outlive its callback
          logging.exception("SIGTERM callback failed")
