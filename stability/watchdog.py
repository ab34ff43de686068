"""Ends a process that has stopped making progress, instead of letting it hang.

The processes of one job wait for each other at start-up, in every step's collectives and at
checkpoint barriers. One stuck or stopped process holds the rest there, and JAX has no timeout for
a collective whose peers are still alive. `Watchdog` is a thread that expects a beat at every step
boundary. Past a limit without one, it names the process, the step and what it was waiting for,
records the runs as interrupted (they resume from their last checkpoint), and ends the process.
After a SIGTERM the limit shrinks to a grace period, so a stop that cannot reach a step boundary
still ends the process; so does the end of the launcher that started it.

Limits in seconds (0 turns one off), read from the environment so that every entry point and
launcher shares them:
  STABILITY_STALL_TIMEOUT_S    900   between beats; jobs of several processes only
  STABILITY_STARTUP_TIMEOUT_S  3600  until the first step is done (restore, compile); idem
  STABILITY_SIGTERM_GRACE_S    120   from a SIGTERM to the process's end, any job
  STABILITY_LAUNCHER_PID             set by launch/gpu/run.sh: stop when that process is gone
"""

import dataclasses
import logging
import os
import sys
import threading
import time
from typing import Callable

INTERRUPTED_EXIT_CODE = 75  # as launch.tpu.pod_sweep's preemption: relaunch, it resumes


@dataclasses.dataclass(frozen=True)
class Limits:
  stall_s: float = 0.0
  startup_s: float = 0.0
  sigterm_grace_s: float = 0.0
  launcher_pid: int = 0

  @classmethod
  def from_env(cls, processes: int) -> "Limits":
    """The environment's limits; the stall limits apply only where there are peers to wait on."""
    env = os.environ
    several = processes > 1
    return cls(
        stall_s=_seconds("STABILITY_STALL_TIMEOUT_S", 900) if several else 0.0,
        startup_s=_seconds("STABILITY_STARTUP_TIMEOUT_S", 3600) if several else 0.0,
        sigterm_grace_s=_seconds("STABILITY_SIGTERM_GRACE_S", 120),
        launcher_pid=int(env.get("STABILITY_LAUNCHER_PID") or 0))


def _seconds(name: str, default: float) -> float:
  text = os.environ.get(name, "")
  try:
    value = float(text) if text else float(default)
  except ValueError:
    raise ValueError(f"${name}={text!r}: expected seconds (0 turns it off)") from None
  if value < 0:
    raise ValueError(f"${name}={text!r}: expected seconds ≥ 0 (0 turns it off)")
  return value


class Watchdog:
  """A thread that ends the process when no beat comes in time; a context manager.

  `on_stop(message)` records the runs as interrupted before the process ends; it runs on the
  watchdog's thread while the main thread may be blocked anywhere, so it only writes files.
  """

  def __init__(self, limits: Limits, on_stop: Callable[[str], None], process: str = "process 0",
               poll_s: float = 0.5):
    self.limits, self._on_stop, self._process, self._poll_s = limits, on_stop, process, poll_s
    self._lock = threading.Lock()
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, name="stability-watchdog", daemon=True)
    self._deadline = None  # time.monotonic() after which the process ends
    self._limit_s = 0.0
    self._waiting_for = "start-up"
    self._terminating = False

  _lingering = None  # one left watching a failed run's exit; the next run's watchdog ends it

  def __enter__(self) -> "Watchdog":
    if Watchdog._lingering is not None:
      Watchdog._lingering._halt()
      Watchdog._lingering = None
    self._arm(self.limits.startup_s, "start-up (restore, first compilation and first step)")
    self._thread.start()
    return self

  def __exit__(self, exc_type, *exc) -> None:
    if exc_type is not None and (self.limits.stall_s or self.limits.launcher_pid):
      if self._launcher_gone():  # the peer it lost went with the launcher: say so before exit
        print(f"stability: {self._launcher_message()}", file=sys.stderr, flush=True)
      # A run of a job of several processes failed (a peer gone, say): the peers can hold this
      # process's exit too (JAX's shutdown barrier), so the watch goes on until it ends.
      self._arm(self.limits.stall_s, "the process to exit after an error")
      Watchdog._lingering = self
      return
    self._halt()

  def _halt(self) -> None:
    self._stop.set()
    self._thread.join()

  def beat(self, waiting_for: str) -> None:
    """Progress: the next limit starts now, and `waiting_for` says what the process does next."""
    if not self._terminating:
      self._arm(self.limits.stall_s, waiting_for)

  def sigterm(self) -> None:
    """A SIGTERM arrived: the process ends within the grace period, at a step boundary or not."""
    with self._lock:
      self._terminating = True
    self._arm(self.limits.sigterm_grace_s, "a step boundary to stop at after SIGTERM",
              shorten_only=True)

  def stopping(self, waiting_for: str) -> None:
    """The step boundary to stop at is reached: the grace is over, the stall limit covers the
    checkpoint that follows (a large one may take longer than the grace)."""
    with self._lock:
      self._terminating = False
    self._arm(self.limits.stall_s, waiting_for)

  def _arm(self, limit_s: float, waiting_for: str, shorten_only: bool = False) -> None:
    with self._lock:
      deadline = time.monotonic() + limit_s if limit_s else None
      if shorten_only and self._deadline is not None and (
          deadline is None or deadline > self._deadline):
        return
      self._deadline, self._limit_s, self._waiting_for = deadline, limit_s, waiting_for

  def _watch(self) -> None:
    while not self._stop.wait(self._poll_s):
      if self._launcher_gone():
        # The peers lost the same launcher; the first process to exit would abort the others
        # (JAX's distributed client) before their own watch saw it, so give them time to say so.
        self._end(self._launcher_message(), linger_s=4 * self._poll_s)
      with self._lock:
        late = self._deadline is not None and time.monotonic() > self._deadline
        limit_s, waiting_for = self._limit_s, self._waiting_for
      if late:
        self._end(f"{self._process} waited {limit_s:.0f} s for {waiting_for} and stopped "
                  "(a peer process is stuck, stopped or gone; the runs resume from their last "
                  "checkpoint)")

  def _launcher_gone(self) -> bool:
    return bool(self.limits.launcher_pid) and os.getppid() != self.limits.launcher_pid

  def _launcher_message(self) -> str:
    return f"{self._process}: its launcher (pid {self.limits.launcher_pid}) is gone; stopping"

  def _end(self, message: str, linger_s: float = 0.0) -> None:
    logging.error("%s", message)
    print(f"stability: {message}", file=sys.stderr, flush=True)
    try:
      self._on_stop(message)
    except Exception as e:  # the process ends either way
      print(f"stability: could not record the interruption: {e}", file=sys.stderr, flush=True)
    time.sleep(linger_s)
    os._exit(INTERRUPTED_EXIT_CODE)
