"""The fault suite: runs killed, preempted, corrupted, starved of disk, raced, misconfigured and
fed NaN; every recovered run is compared with an uninterrupted one, bit for bit.

Runs are d64-L1 on synthetic data, 12 steps (tests/faults_util.py). The children share this
module's persistent compilation cache, so after the first compile a run takes about a second.
Random moments come from fixed seeds: a failure reproduces. The reliability summary (trials,
faults injected, bad inputs, runs recovered, nothing lost) is printed when the module ends.
"""

import collections
import errno
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags
from ml_collections import config_flags

from analysis import results as analysis_results
from analysis import sensitivity
from launch import sweep
from stability import train
from tests import faults_util
from tests.faults_util import (CKPT_EVERY, REPO, SEEDS, STEPS, assert_same_run, child_env,
                               fault_config, main_cmd, read_jsonl, snapshot, sweep_cmd)

pytestmark = [
    pytest.mark.faults,
    # orbax's asyncio tasks of a failed restore are collected after their loop closed: noise
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

LEDGER = collections.Counter()  # what the suite verified, for the README's reliability numbers
_RNG = random.Random(1729)      # every random moment below is drawn from this, at import


@pytest.fixture(scope="module", autouse=True)
def _suite(request):
  """Runs in the children's environment (faults_util.fault_env); prints the summary at the end."""
  with faults_util.fault_env():
    yield
  lines = [
      f"trials run: {LEDGER['trials']}",
      f"faults injected: {LEDGER['faults']} ({LEDGER['kills']} SIGKILL, {LEDGER['kills_in_write']} "
      f"of them during a checkpoint write; {LEDGER['sigterms']} SIGTERM; {LEDGER['corruptions']} "
      f"corrupted checkpoints or result files; {LEDGER['disk']} disk faults; {LEDGER['races']} "
      f"race(s) of two sweep runners; {LEDGER['nonfinite']} NaN/Inf)",
      f"bad inputs tried: {LEDGER['bad_inputs']} (each refused before compiling, nothing written)",
      f"runs recovered: {LEDGER['recovered']}; nothing lost: {LEDGER['identical']} of them equal "
      "an uninterrupted run bit for bit",
  ]
  reporter = request.config.pluginmanager.get_plugin("terminalreporter")
  capture = request.config.pluginmanager.get_plugin("capturemanager")
  if reporter is None or capture is None:  # e.g. an xdist worker
    print("\n".join(lines))
    return
  with capture.global_and_fixture_disabled():
    reporter.write("\n")
    reporter.write_sep("-", "fault suite: reliability summary")
    for line in lines:
      reporter.write_line(line)


def tally(**counts) -> None:
  LEDGER.update(trials=1, **counts)


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """The fault grid trained without faults; seed0 is the reference of the single-run tests.
  Once per session (an xdist worker may set this module up more than once)."""
  out = tmp_path_factory.mktemp("reference") / "sweep"
  with faults_util.fault_env():
    assert sweep.run_grid(faults_util.get_grid(), str(out)) == {"done": SEEDS}
  return out


def start(cmd, faults: str, log):
  """A child whose output goes to the file `log` (a full pipe would stall it while we poll)."""
  with open(log, "w") as f:
    return subprocess.Popen(cmd, env=child_env(faults), cwd=REPO, stdout=f,
                            stderr=subprocess.STDOUT)


def finish(proc, log, timeout: float = 300) -> str:
  """Waits for the child (killing it if it overstays); returns its output."""
  try:
    proc.wait(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return log.read_text()


def wait_for_rows(proc, log, folder, rows: int, pattern: str = "metrics.jsonl") -> None:
  """Waits until the files `pattern` under `folder` hold `rows` lines together."""
  deadline = time.time() + 120
  while sum(len(f.read_text().splitlines()) for f in folder.glob(pattern)) < rows:
    assert proc.poll() is None, f"the run ended before the fault:\n{log.read_text()[-3000:]}"
    assert time.time() < deadline, "the run never got there"
    time.sleep(0.005)


def tmp_entries(workdir) -> list[str]:
  folder = workdir / "checkpoints"
  return [n for n in os.listdir(folder) if "orbax-checkpoint-tmp" in n] if folder.exists() else []


def run_log(caplog) -> str:
  """What the runs of this test logged. Not asyncio's: it reports the failures of an earlier
  test's abandoned orbax reads whenever they are garbage-collected, in whichever test that is."""
  return "\n".join(r.getMessage() for r in caplog.records if r.name == "root")


def resumed_from(caplog) -> int | None:
  found = re.findall(r"resumed .* from step (\d+)", run_log(caplog))
  return int(found[-1]) if found else None


# --- 1. SIGKILL at random moments -------------------------------------------------------------

# (how, at, delay): "external" kills from outside once `at` rows are logged, `delay` s later;
# the others kill from inside a checkpoint write of step `at` (see faults_util.install).
KILLS = [
    ("external", _RNG.randint(1, STEPS - 2), _RNG.uniform(0, 0.05)),
    ("external", _RNG.randint(1, STEPS - 2), _RNG.uniform(0, 0.05)),
    ("kill_in_write", CKPT_EVERY, 0),  # the first checkpoint: no earlier one to resume from
    ("kill_in_write", _RNG.choice((6, 9, 12)), 0),
    ("kill_after_save", _RNG.choice((6, 9, 12)), 0),
    ("kill_on_tmp", _RNG.choice((6, 9)), 0),
]


@pytest.mark.parametrize("how,at,delay", KILLS, ids=[f"{h}@{a}" for h, a, _ in KILLS])
def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path, reference, caplog, how, at,
                                                     delay):
  """SIGKILL mid-step, mid-eval or mid-checkpoint-write; the rerun gives the reference run."""
  workdir, log = tmp_path / "run", tmp_path / "log"
  proc = start(main_cmd(workdir), "throttle=0.1" if how == "external" else f"{how}={at}", log)
  if how == "external":
    wait_for_rows(proc, log, workdir, at)
    time.sleep(delay)
    proc.kill()
  output = finish(proc, log)
  assert proc.returncode == -signal.SIGKILL, output[-3000:]
  in_write = bool(tmp_entries(workdir))
  if how in ("kill_in_write", "kill_on_tmp"):
    assert in_write, os.listdir(workdir / "checkpoints")  # the kill did land inside a write
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "running"

  caplog.set_level(logging.INFO)
  assert train.train_and_evaluate(fault_config(), str(workdir))["status"] == "done"
  assert_same_run(workdir, reference / "seed0")
  if how == "kill_in_write" and at == CKPT_EVERY:
    assert resumed_from(caplog) is None  # the torn first checkpoint was not used
  tally(faults=1, kills=1, kills_in_write=int(in_write), recovered=1, identical=1)


# --- 2. preemption (SIGTERM) ------------------------------------------------------------------

TERMS = [("external", _RNG.randint(2, STEPS - 3)), ("term_in_write", _RNG.choice((3, 6, 9)))]


@pytest.mark.parametrize("how,at", TERMS, ids=[f"{h}@{a}" for h, a in TERMS])
def test_sigterm_leaves_a_consistent_checkpoint_and_rerun_finishes(tmp_path, reference, caplog,
                                                                   how, at):
  """SIGTERM during training or during a checkpoint write: exit 0, status preempted, a
  checkpoint of the stopping step that restores; the rerun gives the reference run."""
  workdir, log = tmp_path / "run", tmp_path / "log"
  faults = "throttle=0.1" if how == "external" else f"throttle=0.1;term_in_write={at}"
  proc = start(main_cmd(workdir), faults, log)
  if how == "external":
    wait_for_rows(proc, log, workdir, at)
    proc.send_signal(signal.SIGTERM)
  output = finish(proc, log)
  assert proc.returncode == 0, output[-3000:]
  summary = json.loads((workdir / "summary.json").read_text())
  stopped = summary["steps"]
  assert summary["status"] == "preempted" and 0 < stopped < STEPS, summary
  if how == "term_in_write":
    assert at < stopped <= at + 2  # the step after the write it interrupted
    assert (workdir / "checkpoints" / str(at)).is_dir()  # the interrupted write completed
  assert (workdir / "checkpoints" / str(stopped)).is_dir() and not tmp_entries(workdir)

  caplog.set_level(logging.INFO)
  assert train.train_and_evaluate(fault_config(), str(workdir))["status"] == "done"
  assert resumed_from(caplog) == stopped and "unreadable" not in run_log(caplog)
  assert_same_run(workdir, reference / "seed0")
  tally(faults=1, sigterms=1, recovered=1, identical=1)


# --- 3. corrupted checkpoints and result files ------------------------------------------------


def interrupted_copy(run, workdir):
  """A copy of a finished run that looks killed after its last checkpoint (status running)."""
  shutil.copytree(run, workdir)
  summary = json.loads((workdir / "summary.json").read_text())
  (workdir / "summary.json").write_text(json.dumps({**summary, "status": "running"}))
  return workdir


def truncate_files(folder) -> None:
  for path in sorted(folder.rglob("*")):
    if path.is_file():
      os.truncate(path, path.stat().st_size // 2)


def _truncated_state(checkpoints):
  truncate_files(checkpoints / "12" / "state")
  return [12]


def _deleted_arrays(checkpoints):
  for path in (checkpoints / "12" / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.unlink()
  return [12]


def _deleted_data_item(checkpoints):
  shutil.rmtree(checkpoints / "12" / "data")
  return [12]


def _emptied_loop_item(checkpoints):
  (checkpoints / "12" / "loop" / "metadata").write_text("")
  return [12]


def _two_newest_truncated(checkpoints):
  truncate_files(checkpoints / "12" / "state")
  truncate_files(checkpoints / "9" / "state")
  return [12, 9]


def _random_truncation(seed):
  """One file of checkpoint 12's state, cut at a random length: maybe harmless (an unused file),
  so the warning is not required, but the results must be right either way."""
  def corrupt(checkpoints):
    rng = random.Random(seed)
    files = sorted(p for p in (checkpoints / "12" / "state").rglob("*")
                   if p.is_file() and p.stat().st_size)
    path = rng.choice(files)
    os.truncate(path, rng.randrange(path.stat().st_size))
    return []
  return corrupt


CORRUPTIONS = {  # each damages an interrupted copy and returns the steps it made unreadable
    "truncated_state": _truncated_state,
    "deleted_arrays": _deleted_arrays,
    "deleted_data_item": _deleted_data_item,
    "emptied_loop_item": _emptied_loop_item,
    "two_newest_truncated": _two_newest_truncated,
    "random_truncation_a": _random_truncation(_RNG.random()),
    "random_truncation_b": _random_truncation(_RNG.random()),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_unreadable_checkpoint_falls_back_to_the_previous_one(tmp_path, reference, caplog, name):
  """The newest checkpoint(s) damaged: a warning per bad one, it is moved aside, the run resumes
  from the newest good one and ends equal to the reference run. The first case reruns through
  `stability.main` and reads the warning in its stderr."""
  workdir = interrupted_copy(reference / "seed0", tmp_path / "run")
  checkpoints = workdir / "checkpoints"
  bad = CORRUPTIONS[name](checkpoints)
  caplog.set_level(logging.INFO)
  if name == "truncated_state":
    proc = subprocess.run(main_cmd(workdir), env=child_env(), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stderr
  else:
    assert train.train_and_evaluate(fault_config(), str(workdir))["status"] == "done"
    log = run_log(caplog)
  for step in bad:
    assert f"checkpoint {step} in {checkpoints} is unreadable" in log, log[-3000:]
    assert "trying the previous one" in log and f"aside to {checkpoints}/{step}.unreadable-0" in log
    assert (checkpoints / f"{step}.unreadable-0").is_dir()
  if bad:
    assert re.search(rf"resumed .* from step {min(bad) - CKPT_EVERY}\b", log), log[-3000:]
  assert_same_run(workdir, reference / "seed0")
  tally(faults=1, corruptions=1, recovered=1, identical=1)


def test_no_readable_checkpoint_is_refused_not_trained_from_scratch(tmp_path, reference):
  """Every checkpoint damaged: RuntimeError, status failed, and nothing else touched."""
  workdir = interrupted_copy(reference / "seed0", tmp_path / "run")
  for step in (6, 9, 12):
    truncate_files(workdir / "checkpoints" / str(step) / "state")
  before = snapshot(workdir)
  with pytest.raises(RuntimeError, match="no readable checkpoint in .*refusing to train from "
                     "scratch over them: move the folder away"):
    train.train_and_evaluate(fault_config(), str(workdir))
  after = snapshot(workdir)
  assert sorted(after) == sorted(before)
  assert [k for k in before if before[k] != after[k]] == ["summary.json"]
  summary = json.loads(after["summary.json"])
  assert summary["status"] == "failed" and "no readable checkpoint" in summary["error"]
  tally(faults=1, corruptions=1)


def test_corrupt_result_files_do_not_break_analysis_of_the_rest(tmp_path, reference):
  """A torn summary.json in one run and a corrupt metrics line in another: load_runs,
  sensitivity_table and with_metric read everything else and name both in their problems."""
  out = tmp_path / "sweep"
  shutil.copytree(reference, out, ignore=shutil.ignore_patterns("checkpoints"))
  summary = (out / "seed1" / "summary.json").read_text()
  (out / "seed1" / "summary.json").write_text(summary[:len(summary) // 2])
  lines = (out / "seed2" / "metrics.jsonl").read_text().splitlines()
  lines[5] = lines[5][:40]
  (out / "seed2" / "metrics.jsonl").write_text("\n".join(lines) + "\n")

  with pytest.warns(analysis_results.ProblemWarning):
    runs = analysis_results.load_runs(out)
  by_name = runs.set_index("name")
  assert sorted(by_name.index) == ["seed0", "seed1", "seed2"]
  assert by_name.status["seed1"] == "unknown"
  for name in ("seed0", "seed2"):
    want = json.loads((reference / name / "summary.json").read_text())
    assert by_name.status[name] == "done"
    assert by_name.final_eval_loss[name] == want["final_eval_loss"]
  assert any("seed1" in p and "summary.json" in p for p in runs.attrs["problems"])

  with pytest.warns(analysis_results.ProblemWarning):
    table = sensitivity.sensitivity_table(runs)
  # One row per seed (each is its own replicate); seed1's unreadable summary is left out.
  assert list(table.n_runs) == [1, 1] and np.isfinite(table.sensitivity).all()
  assert any("seed1" in p for p in table.attrs["problems"])

  with pytest.warns(analysis_results.ProblemWarning):
    losses = analysis_results.with_metric(runs, "train_loss", last_steps=STEPS).set_index("name")
  kept = [r["train_loss"] for r in read_jsonl(reference / "seed2" / "metrics.jsonl")]
  del kept[5]
  assert losses.train_loss["seed2"] == pytest.approx(np.mean(kept), rel=1e-12)
  assert np.isfinite(losses.train_loss["seed0"])
  assert any("seed2" in p and "metrics.jsonl" in p and "corrupt" in p
             for p in losses.attrs["problems"])
  tally(faults=2, corruptions=2)


# --- 4. unwritable workdir, full disk ---------------------------------------------------------


def unwritable_workdir(kind, tmp_path, monkeypatch):
  """A workdir that cannot be written. Root ignores permissions: a read-only parent is then
  simulated by making mkdir under it fail as it would."""
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  if kind == "parent_is_file":
    return blocker / "run"
  if kind == "workdir_is_file":
    return blocker
  parent = tmp_path / "read_only"
  parent.mkdir()
  if os.geteuid() != 0:
    parent.chmod(0o555)
    return parent / "run"
  mkdir = os.mkdir

  def refuse(path, *args, **kwargs):
    if str(path).startswith(str(parent) + os.sep):
      raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    return mkdir(path, *args, **kwargs)
  monkeypatch.setattr(os, "mkdir", refuse)
  return parent / "run"


@pytest.mark.parametrize("kind", ["parent_is_file", "workdir_is_file", "read_only_parent"])
def test_unwritable_workdir_is_refused_before_training(tmp_path, reference, monkeypatch, kind):
  """A clear error naming the path, before anything is compiled or written."""
  workdir = unwritable_workdir(kind, tmp_path, monkeypatch)
  compiled = faults_util.compile_count("backend")  # the reference warmed Run()'s tiny eager ops
  with pytest.raises(OSError, match=rf"cannot write the run folder {re.escape(str(workdir))} "
                     r"\(.+\); pass a --workdir in a writable place"):
    train.train_and_evaluate(fault_config(), str(workdir))
  assert faults_util.compile_count("backend") == compiled
  assert (tmp_path / "file").read_text() == "not a folder"
  assert not workdir.is_dir()
  tally(faults=1, disk=1)


def _fail_orbax_save_of(step, where, monkeypatch):
  """Makes the save of checkpoint `step` fail with ENOSPC: inside orbax's asynchronous write of
  an item (the tmp folder exists), or synchronously in CheckpointManager.save."""
  def enospc(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
  if where == "async_write":
    handler = ocp.handlers.JsonCheckpointHandler
    write = handler._save_fn

    async def failing_write(self, item, directory):
      if directory.parent.name.split(".")[0] == str(step):
        raise enospc(directory)
      return await write(self, item, directory)
    monkeypatch.setattr(handler, "_save_fn", failing_write)
  else:
    save = ocp.CheckpointManager.save

    def failing_save(self, at, *args, **kwargs):
      if at == step:
        raise enospc(self.directory / str(step))
      return save(self, at, *args, **kwargs)
    monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)


@pytest.mark.parametrize("where", ["async_write", "sync_save"])
def test_failed_save_keeps_the_previous_checkpoint(tmp_path, reference, monkeypatch, caplog,
                                                   where):
  """Disk full while saving checkpoint 6 (keep_ckpts=1, so 3 is the only other one): an
  OSError(ENOSPC) naming the step, the folder and the intact checkpoint; status failed;
  checkpoint 3 intact; the rerun resumes from it and ends equal to the reference run."""
  workdir, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
  config = fault_config({"train.keep_ckpts": 1})
  _fail_orbax_save_of(6, where, monkeypatch)
  with pytest.raises(OSError) as raised:
    train.train_and_evaluate(config, str(workdir))
  message = str(raised.value)
  assert raised.value.errno == errno.ENOSPC, message
  assert f"saving checkpoint 6 to {checkpoints} failed" in message
  assert "No space left on device" in message
  assert "the newest intact checkpoint is step 3" in message and "rerun" in message
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "failed" and "saving checkpoint 6" in summary["error"], summary
  listing = sorted(os.listdir(checkpoints))
  assert "3" in listing and "6" not in listing, listing

  monkeypatch.undo()
  caplog.clear()
  caplog.set_level(logging.INFO)
  assert train.train_and_evaluate(config, str(workdir))["status"] == "done"
  assert resumed_from(caplog) == 3 and "unreadable" not in run_log(caplog), run_log(caplog)[-3000:]
  assert_same_run(workdir, reference / "seed0")
  tally(faults=1, disk=1, recovered=1, identical=1)


@pytest.mark.parametrize("where", ["async_write", "sync_save"])
def test_failed_final_save_is_recorded_then_rerun_finishes(tmp_path, reference, monkeypatch,
                                                           caplog, where):
  """Disk full while saving the final checkpoint (step 12; checkpoints every 5): status failed
  with the error, not running or done; the rerun resumes from 10 and ends equal to the
  reference run. An asynchronous write fails after the loop has called the run done."""
  workdir = tmp_path / "run"
  config = fault_config({"train.ckpt_every": 5})
  _fail_orbax_save_of(STEPS, where, monkeypatch)
  with pytest.raises(OSError, match=f"saving checkpoint {STEPS}"):
    train.train_and_evaluate(config, str(workdir))
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "failed" and f"checkpoint {STEPS}" in summary["error"], summary

  monkeypatch.undo()
  caplog.clear()
  caplog.set_level(logging.INFO)
  assert train.train_and_evaluate(config, str(workdir))["status"] == "done"
  assert resumed_from(caplog) == 10, run_log(caplog)[-3000:]
  assert_same_run(workdir, reference / "seed0")
  tally(faults=1, disk=1, recovered=1, identical=1)


# --- 5. concurrent sweep runners, a killed sweep ----------------------------------------------


def sweep_counts(stdout: str, out) -> dict[str, int]:
  """The final `[sweep] <out>: 2 done, 1 locked` line as {"done": 2, "locked": 1}."""
  line = re.search(rf"^\[sweep\] {re.escape(str(out))}: (.*)$", stdout, re.M).group(1)
  return {k: int(v) for v, k in (item.split() for item in line.split(", "))}


def test_two_runners_on_one_sweep_train_each_point_once(tmp_path, reference):
  """Two `launch.sweep` processes started together on one sweep: every point trained by exactly
  one of them (its "done" line), the other skipping it or finding it done; each point equals the
  reference."""
  out, barrier = tmp_path / "sweep", tmp_path / "barrier"
  barrier.mkdir()
  logs = [tmp_path / "log0", tmp_path / "log1"]
  procs = [start(sweep_cmd(out), f"throttle=0.1;barrier={barrier}:2", log) for log in logs]
  outputs = [finish(proc, log) for proc, log in zip(procs, logs)]
  for proc, output in zip(procs, outputs):
    assert proc.returncode == 0, output[-3000:]
  trained = [re.findall(r"^\[sweep\] \d+/\d+ (\S+): done in", output, re.M)
             for output in outputs]
  names = [p.name for p in faults_util.get_grid().points]
  assert sorted(trained[0] + trained[1]) == names, trained
  counts = [sweep_counts(output, out) for output in outputs]
  assert all(sum(c.values()) == SEEDS and "failed" not in c for c in counts), counts
  skipped = [re.findall(r"(\S+) is being run by another runner; skipping", output)
             for output in outputs]
  assert skipped[0] or skipped[1], outputs  # they did meet on a point
  for mine, other in ((0, 1), (1, 0)):
    assert set(skipped[mine]) <= set(trained[other]), (skipped, trained)
    assert counts[mine].get("locked", 0) == len(skipped[mine]), counts
  for name in names:
    assert_same_run(out / name, reference / name)
  assert not os.listdir(out / ".locks")
  tally(faults=1, races=1)


_SWEEP_KILL = (_RNG.randint(2, SEEDS * STEPS - 3), _RNG.uniform(0, 0.03))  # (rows, delay)


def test_sweep_killed_at_a_random_moment_completes_exactly(tmp_path, reference):
  """SIGKILL a sweep runner at a random moment, run the sweep again: every point equals the
  reference (the killed point resumes; its stale lock is taken over)."""
  out, log = tmp_path / "sweep", tmp_path / "log"
  rows, delay = _SWEEP_KILL
  proc = start(sweep_cmd(out), "throttle=0.05", log)
  wait_for_rows(proc, log, out, rows, pattern="*/metrics.jsonl")
  time.sleep(delay)
  proc.kill()
  output = finish(proc, log)
  assert proc.returncode == -signal.SIGKILL, output[-3000:]
  assert sweep.run_grid(faults_util.get_grid(), str(out)) == {"done": SEEDS}
  for point in faults_util.get_grid().points:
    assert_same_run(out / point.name, reference / point.name)
  assert not os.listdir(out / ".locks")
  tally(faults=1, kills=1, recovered=1, identical=1)


# --- 6. bad configs and data ------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """Broken data files: empty, too short, odd-sized, 2-D, too few rows for eval, blank text."""
  d = tmp_path_factory.mktemp("bad_data")
  (d / "empty.bin").write_bytes(b"")
  np.arange(10, dtype=np.uint16).tofile(d / "short.bin")
  np.arange(17 * 10, dtype=np.uint16).tofile(d / "ten_rows.bin")  # 10 rows of seq_len 16 + 1
  (d / "odd.bin").write_bytes(b"abc")
  np.save(d / "matrix.npy", np.zeros((4, 4), np.uint16))
  (d / "blank.txt").write_text("\n  \n\t\n")
  (d / "a_file").write_text("not a folder")
  return d


TOKENS = {"data.source": "tokens"}
# (id, overrides ("{d}" is the data_dir), regex naming the field, regex of the fix it states)
BAD_INPUTS = [
    ("type_bool_steps", {"train.steps": True}, r"config\.train\.steps=True", r"an integer > 0"),
    ("type_none_b1", {"opt.b1": None}, r"config\.opt\.b1=None", r"a number in \[0, 1\)"),
    ("type_none_data_seed", {"data.seed": None}, r"data\.seed=None", r"an integer >= 0"),
    ("unknown_key", {"opt.learning_rate": 0.1}, r"config\.opt\.learning_rate is not a known",
     r"known opt fields: .*peak_lr"),
    ("unknown_qk_layernorm", {"model.qk_layernorm": "sometimes"}, r"config\.model\.qk_layernorm",
     r"one of per_head, full_width, off"),
    ("unknown_attention", {"model.attention": "linear"}, r"config\.model\.attention=",
     r"one of softmax"),
    ("unknown_source", {"data.source": "wikipedia"}, r"config\.data\.source", r"one of c4, text"),
    ("heads_not_dividing_width", {"model.num_heads": 3}, r"config\.model\.num_heads=3",
     r"a divisor of model\.d_model=64"),
    ("zero_width", {"model.d_model": 0}, r"config\.model\.d_model=0", r"an integer > 0"),
    ("zero_seq_len", {"model.seq_len": 0}, r"config\.model\.seq_len=0", r"an integer > 0"),
    ("zero_lr", {"opt.peak_lr": 0.0}, r"config\.opt\.peak_lr=0\.0", r"a number > 0"),
    ("negative_lr", {"opt.peak_lr": -1e-3}, r"config\.opt\.peak_lr=-0\.001", r"a number > 0"),
    ("nan_lr", {"opt.peak_lr": float("nan")}, r"config\.opt\.peak_lr=nan", r"a number > 0"),
    ("min_lr_above_peak", {"opt.min_lr": 1.0}, r"config\.opt\.min_lr=1\.0",
     r"<= opt\.peak_lr=0\.003"),
    ("zero_steps", {"train.steps": 0}, r"config\.train\.steps=0", r"an integer > 0"),
    ("negative_steps", {"train.steps": -5}, r"config\.train\.steps=-5", r"an integer > 0"),
    ("warmup_longer_than_training", {"opt.warmup_steps": 50}, r"config\.opt\.warmup_steps=50",
     r"in \[0, train\.steps=12\)"),
    ("zero_ckpt_every", {"train.ckpt_every": 0}, r"config\.train\.ckpt_every=0", r"> 0"),
    ("batch_not_divisible_by_grad_accum", {"train.grad_accum": 3},
     r"config\.train\.grad_accum=3", r"a divisor of data\.batch_size=4"),
    ("zero_eval_batches", {"data.eval_batches": 0}, r"config\.data\.eval_batches=0", r"> 0"),
    ("zero_batch", {"data.batch_size": 0}, r"config\.data\.batch_size=0", r"an integer > 0"),
    ("negative_z_loss", {"loss.z_loss": -1.0}, r"config\.loss\.z_loss=-1\.0", r"a number >= 0"),
    ("mesh_larger_than_devices", {"mesh.data": 2}, r"config\.mesh: data×fsdp×tensor = 2×1×1",
     r"set one axis to -1"),
    ("mesh_two_fills", {"mesh.data": -1, "mesh.fsdp": -1}, r"config\.mesh=",
     r"at most one of them -1"),
    ("negative_data_seed", {"data.seed": -1}, r"data\.seed=-1", r"an integer >= 0"),
    ("eval_fraction_one", {"data.eval_fraction": 1.0}, r"data\.eval_fraction=1\.0",
     r"in \[0, 1\)"),
    ("synthetic_vocab_one", {"data.synthetic.vocab_size": 1}, r"data\.synthetic\.vocab_size=1",
     r">= 2"),
    ("tokens_path_missing", {**TOKENS}, r"data\.tokens\.path",
     r"python -m stability\.tools\.tokenize"),
    ("tokens_file_absent", {**TOKENS, "data.tokens.path": "{d}/absent.bin"},
     r"absent\.bin does not exist", r"fix --config\.data\.tokens\.path"),
    ("tokens_file_empty", {**TOKENS, "data.tokens.path": "{d}/empty.bin"},
     r"empty\.bin is empty", r"fix --config\.data\.tokens\.path"),
    ("tokens_shorter_than_a_row", {**TOKENS, "data.tokens.path": "{d}/short.bin"},
     r"fewer than one row of seq_len \+ 1 = 17", r"smaller --config\.model\.seq_len"),
    ("tokens_too_few_eval_rows", {**TOKENS, "data.tokens.path": "{d}/ten_rows.bin"},
     r"fewer than one eval batch of 4 rows", r"lower --config\.data\.eval_batch_size"),
    ("tokens_nothing_left_to_train", {**TOKENS, "data.tokens.path": "{d}/ten_rows.bin",
                                      "data.eval_fraction": 0.95},
     r"leaves none to train on", r"lower data\.eval_fraction"),
    ("tokens_odd_byte_count", {**TOKENS, "data.tokens.path": "{d}/odd.bin"},
     r"odd\.bin has 3 bytes", r"--config\.data\.tokens\.dtype"),
    ("tokens_not_flat", {**TOKENS, "data.tokens.path": "{d}/matrix.npy"},
     r"matrix\.npy holds uint16 of shape \(4, 4\), not a flat",
     r"fix --config\.data\.tokens\.path"),
    ("tokens_bad_dtype", {**TOKENS, "data.tokens.path": "{d}/ten_rows.bin",
                          "data.tokens.dtype": "float9"}, r"data\.tokens\.dtype='float9'",
     r"use uint16 or uint32"),
    ("text_files_missing", {"data.source": "text", "data.text.paths": "{d}/missing*.txt"},
     r"data\.text\.paths pattern", r"fix --config\.data\.text\.paths"),
    ("text_corpus_empty", {"data.source": "text", "data.text.paths": "{d}/blank.txt"},
     r"text corpus is empty", r"fix --config\.data\.text\.paths"),
    ("vocabulary_missing", {"data.source": "c4", "data.c4.vocab_path": "{d}/absent.model"},
     r"cannot read the vocabulary .*absent\.model", r"point --config\.data\.c4\.vocab_path"),
    ("cache_dir_unwritable", {"data.source": "embedded",
                              "data.embedded.cache_dir": "{d}/a_file/cache"},
     r"data cache folder .*a_file/cache", r"set --config\.data\.embedded\.cache_dir"),
]


@pytest.mark.parametrize("overrides,field,fix", [c[1:] for c in BAD_INPUTS],
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_refused_before_compiling(tmp_path, data_dir, overrides, field, fix):
  """train_and_evaluate refuses with a message naming the field and the fix, before tracing or
  compiling anything, and leaves no result folder behind."""
  config = fault_config({k: v.format(d=data_dir) if isinstance(v, str) else v
                         for k, v in overrides.items()})
  workdir = tmp_path / "run"
  compiled = faults_util.compile_count()
  with pytest.raises(ValueError) as raised:
    train.train_and_evaluate(config, str(workdir))
  message = str(raised.value)
  assert re.search(field, message) and re.search(fix, message), message
  assert faults_util.compile_count() == compiled
  assert not workdir.exists()
  tally(bad_inputs=1)


def test_workdir_of_another_config_is_refused_untouched(tmp_path, reference):
  """An existing run folder with another LR: ConfigError naming opt.peak_lr, folder unchanged."""
  workdir = interrupted_copy(reference / "seed0", tmp_path / "run")
  before = snapshot(workdir)
  with pytest.raises(ValueError, match=r"holds a run with a different config \(differs in: "
                     r"opt\.peak_lr\); use a new --workdir"):
    train.train_and_evaluate(fault_config({"opt.peak_lr": 1e-2}), str(workdir))
  assert snapshot(workdir) == before
  tally(bad_inputs=1)


def test_model_vocabulary_smaller_than_the_data_is_refused(tmp_path, monkeypatch):
  """model.vocab_size=100 on 259-id data: out-of-range ids would train on NaN embeddings (the run
  used to end "diverged" at step 0). Building a Run counts as not refused, so a regression fails
  fast."""
  workdir = tmp_path / "run"

  def not_refused(configs, vocab_size, *args, **kwargs):
    raise AssertionError(f"Run built for model.vocab_size={configs[0].model.vocab_size}")
  monkeypatch.setattr(train.run_lib, "cached_run", not_refused)
  with pytest.raises(ValueError, match=r"config\.model\.vocab_size=100 is smaller than the 259 "
                     r"token ids.*set it to 0"):
    train.train_and_evaluate(fault_config({"model.vocab_size": 100}), str(workdir))
  assert not workdir.exists()
  tally(bad_inputs=1)


BAD_FLAGS = [
    ("--config.train.steps=ten", r"--config\.train\.steps=ten: invalid literal for int"),
    ("--config.train.steps=1e3", r"--config\.train\.steps=1e3: invalid literal for int"),
    ("--config.opt.peak_lr=fast", r"--config\.opt\.peak_lr=fast: could not convert"),
    ("--config.model.seq_len=1.5", r"--config\.model\.seq_len=1\.5: invalid literal for int"),
    ("--config.trian.steps=5", r"trian.*Did you mean \"train\""),
]


def parse_config_flags(monkeypatch, *args):
  """The config `stability.main` would get from these command-line flags."""
  argv = ["stability.main", f"--config={REPO}/tests/faults_util.py:point=seed0", *args]
  monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=values)
  values(argv)
  return values.config


@pytest.mark.parametrize("flag,match", BAD_FLAGS, ids=[f for f, _ in BAD_FLAGS])
def test_bad_flag_is_refused_by_config_flags(monkeypatch, flag, match):
  """Wrong types and unknown groups on the command line never reach training."""
  with pytest.raises((flags.Error, KeyError, AttributeError), match=match):
    parse_config_flags(monkeypatch, flag)
  tally(bad_inputs=1)


def test_unknown_flag_is_refused_naming_the_known_fields(tmp_path):
  """`--config.opt.learning_rate=0.1` (a typo of peak_lr) through `stability.main`: refused with
  the known fields (ml_collections alone said only AttributeError: 'learning_rate')."""
  proc = subprocess.run(main_cmd(tmp_path / "run", {"opt.learning_rate": 0.1}), env=child_env(),
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0 and not (tmp_path / "run").exists()
  assert re.search(r"config\.opt\.learning_rate is not a known field.*peak_lr", proc.stderr), (
      proc.stderr[-3000:])
  tally(bad_inputs=1)


# --- 7. NaN and Inf ---------------------------------------------------------------------------

NONFINITE = [("loss", _RNG.randint(1, STEPS - 2)), ("grads", _RNG.randint(1, STEPS - 2)),
             ("params", _RNG.randint(1, STEPS - 2))]


@pytest.mark.parametrize("kind,at", NONFINITE, ids=[f"{k}@{a}" for k, a in NONFINITE])
def test_nonfinite_step_is_recorded_as_diverged(tmp_path, monkeypatch, kind, at):
  """Inf in the loss only, NaN in one gradient only, or NaN in a parameter after the update:
  status diverged at that very step, no row after it, and a rerun changes nothing."""
  faults_util.inject_nonfinite(monkeypatch, kind, at)
  workdir = tmp_path / "run"
  summary = train.train_and_evaluate(fault_config(), str(workdir))
  assert summary["status"] == "diverged" and summary["diverged_at_step"] == at, summary
  rows = read_jsonl(workdir / "metrics.jsonl")
  assert [r["step"] for r in rows] == list(range(at + 1))
  assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["grad_norm"]) for r in rows[:-1])
  loss, grad_norm = rows[-1]["train_loss"], rows[-1]["grad_norm"]
  assert {"loss": loss == math.inf and math.isfinite(grad_norm),
          "grads": math.isfinite(loss) and math.isnan(grad_norm),
          "params": math.isfinite(loss) and math.isfinite(grad_norm)}[kind], rows[-1]
  assert math.isfinite(summary["final_eval_loss"]) == (kind == "loss")  # NaN params: no eval
  on_disk = json.loads((workdir / "summary.json").read_text())
  assert on_disk["status"] == "diverged" and on_disk["diverged_at_step"] == at
  before = snapshot(workdir)
  assert train.train_and_evaluate(fault_config(), str(workdir)) == on_disk
  assert snapshot(workdir) == before
  tally(faults=1, nonfinite=1)


def test_diverged_point_does_not_stop_the_grid(tmp_path, reference, monkeypatch):
  """A 2-point grid whose first point gets a NaN gradient: diverged, and the second finishes
  equal to its reference."""
  kind, at = NONFINITE[1]
  real = train.train_and_evaluate

  def first_point_diverges(config, workdir):
    with pytest.MonkeyPatch.context() as patch:
      if os.path.basename(workdir) == "seed0":
        faults_util.inject_nonfinite(patch, kind, at)
      return real(config, workdir)
  monkeypatch.setattr(train, "train_and_evaluate", first_point_diverges)
  out = tmp_path / "sweep"
  assert sweep.run_grid(faults_util.get_grid("seeds=2"), str(out)) == {"diverged": 1, "done": 1}
  summary = json.loads((out / "seed0" / "summary.json").read_text())
  assert summary["status"] == "diverged" and summary["diverged_at_step"] == at
  assert_same_run(out / "seed1", reference / "seed1")
  tally(faults=1, nonfinite=1)
