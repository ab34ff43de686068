"""`python -m stability.main` with a test hook installed first, chosen by $TEST_HOOK:

  throttle          0.1 s per step, so that a signal surely lands mid-run
  kill_at=K,C       SIGKILL this process once log row K is written and checkpoint C is on disk

  python -m tests.hooked_main --workdir=... --config=...   (the arguments of stability.main)
"""

import os
import runpy
import signal
import sys
import time

from stability import run as run_lib
from stability import run_files


def throttle() -> None:
  step = run_lib.Run.train_step

  def slow_step(self, *args, **kwargs):
    time.sleep(0.1)
    return step(self, *args, **kwargs)
  run_lib.Run.train_step = slow_step


def kill_at(kill_step: int, ckpt_step: int) -> None:
  append = run_files.RunFiles.append_metrics

  def append_then_kill(self, row):
    append(self, row)
    if row["step"] == kill_step:
      deadline = time.time() + 60
      while not (self.dir / "checkpoints" / str(ckpt_step)).exists():
        assert time.time() < deadline, "checkpoint never appeared"
        time.sleep(0.01)
      os.kill(os.getpid(), signal.SIGKILL)
  run_files.RunFiles.append_metrics = append_then_kill


def main() -> None:
  hook = os.environ.get("TEST_HOOK", "")
  if hook == "throttle":
    throttle()
  elif hook.startswith("kill_at="):
    kill_at(*map(int, hook[len("kill_at="):].split(",")))
  sys.argv = ["stability.main", *sys.argv[1:]]
  runpy.run_module("stability.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main()
