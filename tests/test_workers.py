"""Sweep runners on disjoint CPU cores (launch/workers.py): the split, the pinning, the stop."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from launch import workers
from tests.test_sweep import ROOT, statuses, sweep_cmd


def test_cpu_sets_are_disjoint_contiguous_and_cover_every_cpu():
  assert workers.cpu_sets(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
  assert workers.cpu_sets(3, [5, 1, 3]) == [[1], [3], [5]]
  assert workers.cpu_sets(1, [0, 1]) == [[0, 1]]
  with pytest.raises(ValueError, match="1 to 2 workers"):
    workers.cpu_sets(3, [0, 1])
  with pytest.raises(ValueError):
    workers.cpu_sets(0, [0, 1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_a_worker_sees_only_its_own_cpus():
  cpu = sorted(os.sched_getaffinity(0))[-1]
  shown = subprocess.run(workers.pinned_module([cpu], "tests.print_affinity", ["--x=1"]),
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
  assert shown.strip() == f"[{cpu}] ['--x=1']"


def test_a_runner_stops_when_its_parent_is_killed(tmp_path):
  """A parent killed with SIGKILL cannot forward a stop; its runner gets SIGTERM from Linux."""
  cpu = sorted(os.sched_getaffinity(0))[0]
  parent_code = ("import subprocess; from launch import workers; subprocess.Popen("
                 f"workers.pinned_module([{cpu}], 'tests.waits_for_sigterm', [{str(tmp_path)!r}]))"
                 ".wait()")
  parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=ROOT)
  ready, stopped = tmp_path / "ready", tmp_path / "stopped"
  try:
    deadline = time.time() + 30
    while time.time() < deadline and not (ready.exists() and ready.read_text()):
      time.sleep(0.05)
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and not stopped.exists():
      time.sleep(0.05)
    assert stopped.exists()
  finally:
    if ready.exists() and ready.read_text():
      subprocess.run(["kill", ready.read_text()], capture_output=True)


def test_each_runner_is_told_its_place():
  commands = [workers.sweep_command([k], "configs/x.py", "out", runner=f"{k}/2") for k in range(2)]
  assert [[a for a in c if a.startswith("--runner=")] for c in commands] == [
      ["--runner=0/2"], ["--runner=1/2"]]


def test_stop_sends_sigterm_to_every_runner(tmp_path, monkeypatch):
  ready = tmp_path / "ready"
  ready.mkdir()
  waits_for_sigterm = ("import os, signal, sys, time; "
                       "signal.signal(signal.SIGTERM, lambda *a: sys.exit(75)); "
                       f"open(os.path.join({str(ready)!r}, str(os.getpid())), 'w').close(); "
                       "time.sleep(60)")
  places = []
  monkeypatch.setattr(workers, "sweep_command", lambda *args: places.append(args[-1]) or [
      sys.executable, "-c", waits_for_sigterm])
  monkeypatch.setattr(workers, "cpu_sets", lambda n: [sorted(os.sched_getaffinity(0))[:1]] * n)
  both_ready = lambda: len(os.listdir(ready)) == 2
  assert workers.run("unused", "unused", 2, should_stop=both_ready, poll_s=0.05) == [75, 75]
  assert places == ["0/2", "1/2"]


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_two_workers_train_every_point_once(tmp_path):
  out = str(tmp_path / "sweep")
  only = "lr(1e-02|3e-02|1e-01|3e-01)_qkln-on"
  result = subprocess.run(sweep_cmd(out, only) + ["--workers=2"], cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=600)
  assert sorted(statuses(out).values()) == ["done"] * 4
  trained = re.findall(r"^\[sweep\] \d+/4 (\S+): done in", result.stdout, re.M)
  assert sorted(trained) == sorted(statuses(out)), result.stdout  # each point by one runner
  runner_totals = re.findall(rf"^\[sweep\] {re.escape(out)}: .*", result.stdout, re.M)
  assert len(runner_totals) == 3 and runner_totals[-1].endswith(": 4 done"), runner_totals


def test_batched_groups_cannot_be_split_over_workers(monkeypatch, tmp_path, capsys):
  monkeypatch.setattr(workers, "cpu_sets", lambda n: [[0]] * n)  # as if there were n CPUs
  workers.check_flags(1, "on")
  workers.check_flags(2, "auto")
  with pytest.raises(ValueError, match="--batch=on needs --workers=1"):
    workers.check_flags(2, "on")
  from launch import reproduce
  args = [f"--out={tmp_path}", f"--reference={tmp_path}", "--doc=", "--only=fig10"]
  assert reproduce.main(["--workers=2", "--batch=on", *args]) == 2
  assert "--batch=on needs --workers=1" in capsys.readouterr().err
  assert not os.listdir(tmp_path)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_sweep_refuses_batched_groups_over_workers(tmp_path):
  out = str(tmp_path / "sweep")
  result = subprocess.run(sweep_cmd(out) + ["--workers=2", "--batch=on"], cwd=ROOT,
                          capture_output=True, text=True)
  assert result.returncode != 0 and "--batch=on needs --workers=1" in result.stderr
  assert not os.path.exists(out)


def test_reproduce_hands_each_experiment_to_the_workers(tmp_path, monkeypatch):
  from launch import reproduce
  calls = []
  monkeypatch.setattr(workers, "run", lambda spec, out, n, **kw: calls.append((spec, out, n)))
  args = reproduce.parse_args(["--workers=2", f"--out={tmp_path}"])
  for spec, grid in zip(reproduce.EXPERIMENTS, reproduce.all_grids()):
    counts = reproduce.train_grid(args, grid, str(tmp_path / grid.experiment))
    assert calls[-1] == (spec, str(tmp_path / grid.experiment), 2)
    assert counts == {"unfinished": len(grid.points)}


@pytest.mark.slow
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_workers_sweep_stops_its_runners(tmp_path, stop):
  """SIGTERM: the parent passes it on; SIGKILL: Linux sends the runners SIGTERM."""
  out = str(tmp_path / "sweep")
  only = "lr(1e-02|3e-02)_qkln-on"
  long_runs = sweep_cmd(out, only) + ["--set=train.steps=100000", "--workers=2"]
  proc = subprocess.Popen(long_runs, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)

  def runs_with_a_checkpoint():
    return {os.path.basename(os.path.dirname(os.path.dirname(path)))
            for path in glob.glob(os.path.join(out, "*", "checkpoints", "*"))}

  try:
    deadline = time.time() + 240
    while time.time() < deadline and len(runs_with_a_checkpoint()) < 2:
      time.sleep(0.5)  # both runners are inside a run once each run has a checkpoint
    proc.send_signal(stop)
    output, _ = proc.communicate(timeout=120)
    deadline = time.time() + 120
    runners_left = lambda: subprocess.run(["pgrep", "-f", out], capture_output=True).returncode == 0
    while time.time() < deadline and runners_left():
      time.sleep(0.5)  # the runners of a killed parent save and stop on their own
    assert sorted(statuses(out).values()) == ["preempted"] * 2, output
    assert not runners_left()
  finally:
    subprocess.run(["pkill", "-f", out])  # a runner left behind must not outlive the test


def test_count_auto_is_one_runner_per_cpu_unless_batched():
  assert workers.count("3") == 3 and workers.count(2) == 2
  assert workers.count("auto") == len(os.sched_getaffinity(0))  # the tests compute on the CPU
  assert workers.count("auto", batch="on") == 1
  with pytest.raises(ValueError, match="--workers=some: give a number of runners or auto"):
    workers.count("some")


def test_reproduce_and_demo_default_to_one_runner_per_core(monkeypatch):
  from absl import flags
  from launch import demo, reproduce, sweep
  assert reproduce.parse_args([]).workers == "auto"
  calls = []
  monkeypatch.setattr(sweep, "runner_count", lambda requested, batch: calls.append(requested) or 2)
  monkeypatch.setattr(sweep, "run_workers", lambda *args: calls.append(args))
  monkeypatch.setattr(sweep, "run_grid", lambda *args, **kwargs: calls.append("in process"))
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  demo.train(None, "configs/fig1_qk_layernorm.py:scale=cpu,sizes=d64-L2,seeds=0+1", "out")
  assert calls == ["auto", ("configs/fig1_qk_layernorm.py:scale=cpu,sizes=d64-L2,seeds=0+1",
                            "out", 2)]
  monkeypatch.setattr(sweep, "runner_count", lambda requested, batch: 1)
  demo.train(None, "unused", "out")
  assert calls[-1] == "in process"
