"""Marks `<dir>/ready`, then waits; on SIGTERM marks `<dir>/stopped` and exits 75 (for
tests/test_workers.py)."""
import os
import signal
import sys
import time

folder = sys.argv[1]


def stopped(*_):
  open(os.path.join(folder, "stopped"), "w").close()
  sys.exit(75)


signal.signal(signal.SIGTERM, stopped)
with open(os.path.join(folder, "ready"), "w") as f:
  f.write(str(os.getpid()))
time.sleep(60)
