"""The grid runner: re-runs train nothing, a killed sweep completes, runners share a sweep."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import configs
from configs import fig1_qk_layernorm
from configs import grid as grid_lib
from launch import sweep

TINY = ["train.steps=6", "opt.warmup_steps=1", "train.log_every=2", "train.eval_every=6",
        "train.ckpt_every=2", "data.eval_batches=1", "data.batch_size=4", "model.seq_len=16",
        "data.source=synthetic", "data.synthetic.vocab_size=64"]
EXPERIMENT = "configs/fig1_qk_layernorm.py:scale=cpu,sizes=d64-L2,seeds=0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sweep_cmd(out, only=""):
  return [sys.executable, "-m", "launch.sweep", f"--experiment={EXPERIMENT}", f"--out={out}",
          f"--only={only}"] + [f"--set={s}" for s in TINY]


def statuses(out) -> dict[str, str]:
  found = {}
  for name in os.listdir(out):
    path = os.path.join(out, name, "summary.json")
    if os.path.exists(path):
      found[name] = json.load(open(path))["status"]
  return found


def summary_mtimes(out) -> dict[str, float]:
  return {n: os.path.getmtime(os.path.join(out, n, "summary.json")) for n in statuses(out)}


@pytest.mark.slow
def test_killed_sweep_completes_and_rerun_trains_nothing(tmp_path):
  out = str(tmp_path / "sweep")
  only = "lr(1e-02|3e-02|1e-01)_qkln-on"  # 3 LRs of one arm: one compiled program
  proc = subprocess.Popen(sweep_cmd(out, only), cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  # Kill the runner (SIGKILL: no clean-up) once the first point has finished.
  deadline = time.time() + 240
  while time.time() < deadline and not any(
      s in ("done", "diverged") for s in (statuses(out) if os.path.exists(out) else {}).values()):
    time.sleep(0.5)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  first = statuses(out)
  assert 1 <= sum(s in ("done", "diverged") for s in first.values()) < 3, first

  finished_before = {n: t for n, t in summary_mtimes(out).items()
                     if first[n] in ("done", "diverged")}
  subprocess.run(sweep_cmd(out, only), cwd=ROOT, check=True, capture_output=True, timeout=600)
  final = statuses(out)
  expected = [p.name for p in fig1_qk_layernorm.get_grid("scale=cpu,sizes=d64-L2,seeds=0").points
              if re.search(only, p.name)]
  assert sorted(final) == sorted(expected)
  assert all(s in ("done", "diverged") for s in final.values()), final
  mtimes = summary_mtimes(out)
  assert all(mtimes[n] == t for n, t in finished_before.items()), "a finished point was re-run"

  # A finished sweep: re-running trains nothing and rewrites no summary.
  before = summary_mtimes(out)
  result = subprocess.run(sweep_cmd(out, only), cwd=ROOT, check=True, capture_output=True,
                          text=True, timeout=300)
  assert summary_mtimes(out) == before
  assert "running" not in result.stdout and "failed" not in result.stdout
  assert not os.listdir(os.path.join(out, ".locks"))
  json.load(open(os.path.join(out, "sweep.json")))


def test_point_lock_is_exclusive_and_stale_locks_are_taken(tmp_path):
  a, b = sweep.PointLock(tmp_path, "p"), sweep.PointLock(tmp_path, "p")
  assert a.acquire()
  assert not b.acquire()          # held by a live process (this one)
  a.release()
  assert b.acquire()
  b.release()
  # A lock left by a dead process on this host is taken over.
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  with open(os.path.join(tmp_path, "p.lock"), "w") as f:
    json.dump({"host": os.uname().nodename, "pid": dead.pid, "time": 0}, f)
  assert sweep.PointLock(tmp_path, "p").acquire()


def test_finished_points_stale_lock_is_cleared_and_a_live_one_kept(tmp_path, monkeypatch):
  """A runner killed between finishing a point and unlocking it leaves a lock that no later
  run would take (the point is done): the next run removes it, unless its holder still lives."""
  grid = fig1_qk_layernorm.get_grid("scale=cpu,sizes=d64-L2,seeds=0")
  grid = grid.__class__(**{**grid.__dict__, "points": grid.points[:2]})
  for point in grid.points:
    os.makedirs(tmp_path / point.name)
    json.dump({"status": "done"}, open(tmp_path / point.name / "summary.json", "w"))
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  os.makedirs(tmp_path / ".locks")
  for point, pid in zip(grid.points, (dead.pid, os.getpid())):
    with open(tmp_path / ".locks" / f"{point.name}.lock", "w") as f:
      json.dump({"host": socket.gethostname(), "pid": pid, "time": 0}, f)
  assert sweep.run_grid(grid, str(tmp_path)) == {"done": 2}
  assert os.listdir(tmp_path / ".locks") == [f"{grid.points[1].name}.lock"]


def test_failed_point_does_not_stop_the_grid(tmp_path, monkeypatch):
  grid = fig1_qk_layernorm.get_grid("scale=cpu,sizes=d64-L2,seeds=0")
  grid = sweep.with_extra_overrides(grid, {k: json.loads(v) if v[0].isdigit() else v
                                           for k, v in (s.split("=") for s in TINY)})
  grid = grid.__class__(**{**grid.__dict__, "points": grid.points[:3]})
  from stability import train
  calls = []

  def fake_train(config, workdir):
    calls.append(workdir)
    if len(calls) == 1:
      raise RuntimeError("boom")
    os.makedirs(workdir, exist_ok=True)
    summary = {"status": "done"}
    json.dump(summary, open(os.path.join(workdir, "summary.json"), "w"))
    return summary

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  counts = sweep.run_grid(grid, str(tmp_path), batch=False)
  assert counts == {"failed": 1, "done": 2}
  assert len(calls) == 3


def test_eta_counts_only_the_points_left_to_train(tmp_path, monkeypatch, capsys):
  """Points finished before the grid started, or held by another runner, are not priced in the
  ETA (they used to be)."""
  grid = fig1_qk_layernorm.get_grid("scale=cpu,sizes=d64-L2,seeds=0")
  grid = grid.__class__(**{**grid.__dict__, "points": grid.points[:5]})
  names = [p.name for p in grid.points]
  for name in names[2:4]:  # finished earlier
    os.makedirs(tmp_path / name)
    json.dump({"status": "done"}, open(tmp_path / name / "summary.json", "w"))
  os.makedirs(tmp_path / ".locks")  # the first is another live runner's
  with open(tmp_path / ".locks" / f"{names[0]}.lock", "w") as f:
    json.dump({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}, f)
  from stability import train

  def fake_train(config, workdir):
    os.makedirs(workdir, exist_ok=True)
    json.dump({"status": "done"}, open(os.path.join(workdir, "summary.json"), "w"))
    return {"status": "done"}

  monkeypatch.setattr(train, "train_and_evaluate", fake_train)
  assert sweep.run_grid(grid, str(tmp_path)) == {"locked": 1, "done": 4}
  lines = [l for l in capsys.readouterr().out.splitlines() if "ETA" in l]
  assert [l.split(" ")[1] for l in lines] == ["2/5", "5/5"]
  assert lines[0].endswith("for 1 more to train") and lines[1].endswith("for 0 more to train")


def test_runners_begin_on_different_programs_and_each_walks_the_whole_grid():
  points = fig1_qk_layernorm.get_grid("scale=cpu,seeds=0+1").points
  program = lambda p: (p.arm, p.size)
  assert sweep.walk_order(points, 0, 1) == points  # one runner: the grid's own order
  programs = list(dict.fromkeys(map(program, points)))
  assert len(programs) == 6  # 3 sizes x 2 arms; LRs and seeds share a program
  walks = [sweep.walk_order(points, k, 2) for k in range(2)]
  for walk in walks:
    assert sorted(p.name for p in walk) == sorted(p.name for p in points)
    order = [program(p) for p in walk]
    assert [k for i, k in enumerate(order) if i == 0 or order[i - 1] != k] == list(
        dict.fromkeys(order))  # each program's points together
  assert program(walks[0][0]) == programs[0] and program(walks[1][0]) == programs[3]
  three = [program(sweep.walk_order(points, k, 3)[0]) for k in range(3)]
  assert three == [programs[0], programs[2], programs[4]]


@pytest.mark.parametrize("value", ["2/2", "1", "a/b", "-1/2"])
def test_a_bad_runner_is_refused(value):
  with pytest.raises(ValueError, match="--runner="):
    sweep.parse_runner(value)
  assert sweep.parse_runner("1/2") == (1, 2)


def test_eta_is_shared_among_the_runners(capsys):
  names = [f"p{i}" for i in range(5)]
  tally = sweep.Tally(5, set(names), runners=2)
  tally.trained([grid_lib.Point(names[0], "a", "d64-L2", 0.1, {})], ["done"], 60.0)
  assert capsys.readouterr().out.strip().endswith("ETA 2.0 min for 4 more to train")


def test_dry_run_lists_points_and_cost():
  grid = fig1_qk_layernorm.get_grid("scale=paper")
  text = sweep.dry_run(grid, "H100", 0.4)
  assert "112 points" in text and "d2048-L24_lr3e-01_qkln-on" in text
  assert "H100-hours at 40% MFU" in text.splitlines()[-1]
  some = sweep.dry_run(grid, "H100", 0.4, only="^d2048-L24_.*_qkln-on$")
  assert "7 points" in some and "d2048-L24_lr3e-01_qkln-on" in some
  assert "qkln-off" not in some and "d256-L3" not in some


@pytest.mark.parametrize("args, says", [
    (["--experiment=configs/nope.py"], "no file 'configs/nope.py'"),
    (["--experiment=configs/fig1_qk_layernorm.py:scale=cpu", "--set=opt.eps=-1"], "opt.eps"),
    (["--experiment=configs/fig1_qk_layernorm.py:scale=cpu", "--set=model.remat=ful"],
     "model.remat"),
    (["--experiment=configs/fig1_qk_layernorm.py:scale=cpu", "--set=model.nope=1"], "nope")])
def test_a_bad_grid_stops_at_start_with_one_line_even_in_a_dry_run(tmp_path, args, says):
  proc = subprocess.run([sys.executable, "-m", "launch.sweep", *args, "--dry_run",
                         f"--out={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 2 and not proc.stdout
  (line,) = [l for l in proc.stderr.splitlines() if l.startswith("launch.sweep")]
  assert says in line, proc.stderr[-500:]


def test_verbose_shows_the_traceback_of_a_bad_grid(tmp_path):
  proc = subprocess.run([sys.executable, "-m", "launch.sweep", "--experiment=" + EXPERIMENT,
                         "--config.opt.eps=-1", "--dry_run", "--verbose", f"--out={tmp_path}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0 and "Traceback" in proc.stderr and "opt.eps" in proc.stderr


def test_config_overrides_in_the_style_of_stability_main_become_sets():
  argv = ["sweep", "--experiment=configs/fig1_qk_layernorm.py:scale=cpu",
          "--config.train.steps=100", "--set=opt.eps=1e-6", "--config=other"]
  assert grid_lib.config_overrides_as_sets(argv) == [
      "sweep", "--experiment=configs/fig1_qk_layernorm.py:scale=cpu", "--set=train.steps=100",
      "--set=opt.eps=1e-6", "--config=other"]


def test_help_lists_every_experiment_file():
  listed = configs.experiment_list()
  folder = pathlib.Path(ROOT) / "configs"
  for path in sorted(folder.glob("fig*.py")) + [folder / "ablations.py"]:
    assert f"configs/{path.name}: " in listed
  assert "configs/grid.py" not in listed and "configs/base.py" not in listed
