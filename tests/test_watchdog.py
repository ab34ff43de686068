"""The watchdog ends a process that makes no progress; SIGTERM is heard while the main thread is
blocked. Each case runs in a child process, since the watchdog ends its process."""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from stability import watchdog

REPO = pathlib.Path(__file__).resolve().parents[1]

# A child that beats `beats` times, 0.1 s apart, then blocks its main thread for 60 s; the
# watchdog's on_stop writes its message to argv[1].
CHILD = textwrap.dedent('''
    import pathlib, sys, time
    from stability import sigterm, watchdog
    limits = watchdog.Limits(stall_s=float(sys.argv[2]), sigterm_grace_s=float(sys.argv[3]),
                             launcher_pid=int(sys.argv[5]))
    record = lambda message: pathlib.Path(sys.argv[1]).write_text(message)
    with watchdog.Watchdog(limits, record, "process 1 of 2", poll_s=0.05) as dog, \\
         sigterm.Listener(dog.sigterm):
      for step in range(int(sys.argv[4])):
        dog.beat(f"step {step + 1}")
        time.sleep(0.1)
      print("blocked", flush=True)
      time.sleep(60)
    print("returned", flush=True)
''')


def start_child(tmp_path, stall_s=0.0, grace_s=0.0, beats=0, launcher_pid=0, **kw):
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  return subprocess.Popen(
      [sys.executable, "-c", CHILD, str(tmp_path / "stopped.txt"), str(stall_s), str(grace_s),
       str(beats), str(launcher_pid)], env=env, cwd=REPO, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True, **kw)


def wait_blocked(proc) -> None:
  assert proc.stdout.readline().strip() == "blocked"


def test_limits_come_from_the_environment_and_stall_limits_need_peers(monkeypatch):
  monkeypatch.setenv("STABILITY_STALL_TIMEOUT_S", "30")
  monkeypatch.setenv("STABILITY_SIGTERM_GRACE_S", "5")
  monkeypatch.delenv("STABILITY_STARTUP_TIMEOUT_S", raising=False)
  assert watchdog.Limits.from_env(2) == watchdog.Limits(30.0, 3600.0, 5.0, 0)
  assert watchdog.Limits.from_env(1) == watchdog.Limits(0.0, 0.0, 5.0, 0)
  monkeypatch.setenv("STABILITY_STALL_TIMEOUT_S", "soon")
  with pytest.raises(ValueError, match=r"STABILITY_STALL_TIMEOUT_S='soon': expected seconds"):
    watchdog.Limits.from_env(2)


def test_a_process_without_a_beat_past_the_limit_stops_and_says_where(tmp_path):
  proc = start_child(tmp_path, stall_s=1.0, beats=3)
  start = time.time()
  wait_blocked(proc)
  _, err = proc.communicate(timeout=30)
  assert proc.returncode == watchdog.INTERRUPTED_EXIT_CODE
  assert time.time() - start < 10
  message = (tmp_path / "stopped.txt").read_text()
  assert "process 1 of 2 waited 1 s for step 3" in message and message in err


@pytest.mark.slow
def test_beats_in_time_keep_the_process_running(tmp_path):
  proc = start_child(tmp_path, stall_s=1.0, beats=25)  # 2.5 s of beats, 0.1 s apart
  wait_blocked(proc)
  proc.kill()
  proc.communicate()
  assert not (tmp_path / "stopped.txt").exists()


@pytest.mark.slow
def test_sigterm_while_blocked_ends_the_process_after_the_grace(tmp_path):
  proc = start_child(tmp_path, grace_s=1.0, beats=1)  # no stall limit: only the SIGTERM ends it
  wait_blocked(proc)
  time.sleep(0.5)
  sent = time.time()
  proc.send_signal(signal.SIGTERM)
  proc.communicate(timeout=30)
  assert proc.returncode == watchdog.INTERRUPTED_EXIT_CODE
  assert 0.9 < time.time() - sent < 10
  assert "step boundary to stop at after SIGTERM" in (tmp_path / "stopped.txt").read_text()


def test_a_process_stops_when_its_launcher_is_gone(tmp_path):
  """The launcher (a shell) starts the child, then is killed with SIGKILL: no trap runs."""
  script = (f"{sys.executable} -c {_quote(CHILD)} {tmp_path / 'stopped.txt'} 0 0 1 $$ "
            f"> {tmp_path / 'out.txt'} 2>&1 & echo $!; wait")
  launcher = subprocess.Popen(["bash", "-c", script], env={**os.environ, "PYTHONPATH": str(REPO)},
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
  child = int(launcher.stdout.readline())
  deadline = time.time() + 30
  out = tmp_path / "out.txt"
  while not (out.exists() and "blocked" in out.read_text()) and time.time() < deadline:
    time.sleep(0.1)
  launcher.kill()
  launcher.wait()
  while _alive(child) and time.time() < deadline:
    time.sleep(0.1)
  assert not _alive(child)
  assert "its launcher (pid" in (tmp_path / "stopped.txt").read_text()


def _quote(text: str) -> str:
  return "'" + text.replace("'", "'\\''") + "'"


def _alive(pid: int) -> bool:
  """Running, and not a zombie waiting for its reaper."""
  try:
    state = pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
  except FileNotFoundError:
    return False
  return state != "Z"
