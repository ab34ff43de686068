"""Multi-host training with two local CPU processes and `jax.distributed` (gloo collectives).

Each process has 2 CPU devices and the mesh is fsdp=-1, so parameters and optimizer state are
sharded across the processes (4 devices). The two processes are started by launch/gpu/run.sh
--per_gpu (the same env a GPU host gets: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
JAX_PROCESS_ID). A one-process run with the same global batch is the reference for every loss.
An audit hook (sitecustomize) in each child records every file it opens for writing.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from configs import base
from stability import data as data_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 8
FLAGS = {
    "model.seq_len": 32, "model.dtype": "float32", "data.batch_size": 8, "data.eval_batches": 2,
    "data.synthetic.vocab_size": 256, "train.steps": STEPS, "opt.warmup_steps": 2,
    "train.log_every": 1, "train.eval_every": 4, "train.ckpt_every": 4, "train.keep_ckpts": 3,
    "mesh.data": 1, "mesh.fsdp": -1,
}
RESULT_FILES = ("config.json", "metrics.jsonl", "eval.jsonl", "summary.json")

AUDIT_HOOK = textwrap.dedent('''
    """Test helper: appends every path this process opens for writing (or renames onto)."""
    import os, sys
    _log = os.path.join(os.environ["STABILITY_TEST_AUDIT_DIR"],
                        "writes-" + os.environ.get("JAX_PROCESS_ID", "solo") + ".txt")
    _busy = []
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT

    def _hook(event, args):
      if _busy or event not in ("open", "os.rename"):
        return
      if event == "open":
        path, mode, flags = args
        if not (isinstance(flags, int) and flags & _WRITE or mode and set(str(mode)) & set("wax+")):
          return
      else:
        path = args[1]
      if isinstance(path, int):
        return
      _busy.append(1)
      try:
        with open(_log, "a") as f:
          f.write(os.fsdecode(os.fspath(path)) + "\\n")
      finally:
        _busy.pop()

    with open(_log, "a") as f:
      f.write("# hook installed\\n")
    sys.addaudithook(_hook)
''')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _main_args(workdir, **flags) -> list[str]:
  return [sys.executable, "-m", "stability.main", f"--workdir={workdir}",
          f"--config={REPO}/configs/base.py:size=d64-L2,data=synthetic",
          *[f"--config.{k}={v}" for k, v in {**FLAGS, **flags}.items()]]


def _env(tmp: pathlib.Path, devices: int) -> dict:
  site = tmp / "audit_site"
  site.mkdir(exist_ok=True)
  (site / "sitecustomize.py").write_text(AUDIT_HOOK)
  (tmp / "audit").mkdir(exist_ok=True)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_"))}
  env.update(PYTHONPATH=f"{site}:{REPO}", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             STABILITY_TEST_AUDIT_DIR=str(tmp / "audit"), STABILITY_CACHE=str(tmp / "cache"))
  return env


def run_one(tmp: pathlib.Path, workdir, **flags) -> subprocess.CompletedProcess:
  """One process, one device."""
  result = subprocess.run(_main_args(workdir, **flags), env=_env(tmp, 1), cwd=REPO,
                          capture_output=True, text=True, timeout=180)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def start_two(tmp: pathlib.Path, workdir, logs, **flags) -> tuple[subprocess.Popen, pathlib.Path]:
  """Two processes of 2 devices each, through launch/gpu/run.sh --per_gpu."""
  env = _env(tmp, 2)
  env["JAX_COORDINATOR_PORT"] = str(_free_port())
  out = tmp / f"{pathlib.Path(logs).name}.out"
  proc = subprocess.Popen(
      ["bash", str(REPO / "launch/gpu/run.sh"), "--per_gpu", "--gpus=2", f"--logs={logs}",
       *_main_args(workdir, **flags)], env=env, cwd=REPO, stdout=out.open("w"),
      stderr=subprocess.STDOUT)
  return proc, out


def wait_two(proc, out, timeout=240) -> None:
  try:
    proc.wait(timeout=timeout)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, out.read_text()[-3000:]


def rows(path) -> list[dict]:
  return [json.loads(line) for line in pathlib.Path(path).read_text().splitlines()]


def losses(run_dir) -> dict[int, float]:
  return {r["step"]: r["train_loss"] for r in rows(pathlib.Path(run_dir) / "metrics.jsonl")}


def evals(run_dir) -> dict[int, float]:
  return {r["step"]: r["eval_loss"] for r in rows(pathlib.Path(run_dir) / "eval.jsonl")}


def assert_close(got: dict, want: dict, steps) -> None:
  steps = list(steps)
  assert sorted(got) == steps, (sorted(got), steps)
  np.testing.assert_allclose([got[s] for s in steps], [want[s] for s in steps],
                             rtol=1e-5, atol=1e-6)


def as_interrupted(src, dst, keep_step: int) -> pathlib.Path:
  """A copy of a finished run cut back to its checkpoint at `keep_step` (as if preempted)."""
  shutil.copytree(src, dst)
  for step_dir in (dst / "checkpoints").iterdir():
    if step_dir.name.isdigit() and int(step_dir.name) > keep_step:
      shutil.rmtree(step_dir)
  summary = json.loads((dst / "summary.json").read_text())
  (dst / "summary.json").write_text(json.dumps({**summary, "status": "preempted"}))
  return dst


def written(tmp, process: str, workdir) -> set[str]:
  """Files of `workdir` (outside checkpoints/) that a process opened for writing."""
  path = tmp / "audit" / f"writes-{process}.txt"
  assert path.exists(), f"the audit hook did not run in process {process}"
  out = set()
  for p in path.read_text().splitlines():
    if p.startswith("#"):
      continue
    rel = os.path.relpath(p, workdir)
    if not rel.startswith("..") and not rel.startswith("checkpoints"):
      out.add(rel)
  return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted one-process run: the reference for every loss."""
  tmp = tmp_path_factory.mktemp("reference")
  run_one(tmp, tmp / "run")
  return tmp / "run"


@pytest.mark.slow
def test_each_host_reads_its_rows_of_every_global_batch(tmp_path):
  """Host p of P gets rows [p·B/P, (p+1)·B/P) of the one-host batch: train and eval."""
  for source in ("synthetic", "embedded"):
    config = base.get_config(f"size=d64-L2,data={source}")
    config.data.batch_size, config.data.eval_batches = 8, 2
    config.data.synthetic.vocab_size, config.data.embedded.cache_dir = 256, str(tmp_path / "cache")
    single = data_lib.make_train_iterator(config.data, 32)
    hosts = [data_lib.make_train_iterator(config.data, 32, process_index=p, process_count=2)
             for p in range(2)]
    for _ in range(3):
      whole = next(single)
      parts = [next(h) for h in hosts]
      assert [part.shape for part in parts] == [(4, 33), (4, 33)]
      np.testing.assert_array_equal(parts[0], whole[:4])
      np.testing.assert_array_equal(parts[1], whole[4:])
      assert not np.array_equal(parts[0], parts[1])
    single_eval = data_lib.make_eval_batches(config.data, 32)
    host_eval = [data_lib.make_eval_batches(config.data, 32, process_index=p, process_count=2)
                 for p in range(2)]
    for i, whole in enumerate(single_eval):
      np.testing.assert_array_equal(np.concatenate([host_eval[0][i], host_eval[1][i]]), whole)


@pytest.mark.slow
def test_two_processes_resume_a_one_process_checkpoint_and_match_it(reference, tmp_path):
  """1 -> 2 processes: restore the step-4 checkpoint of the reference, train on with 2 processes
  (state sharded across them): same losses; only process 0 writes the result files."""
  work = as_interrupted(reference, tmp_path / "run", keep_step=4)
  events_before = len(list(work.glob("events.out.tfevents*")))
  proc, out = start_two(tmp_path, work, tmp_path / "logs")
  wait_two(proc, out)

  ref_losses, got = losses(reference), losses(work)
  assert_close(got, ref_losses, range(STEPS))  # 0..3 kept from the reference, 4..7 recomputed
  assert_close({s: v for s, v in evals(work).items()}, evals(reference), [0, 4, STEPS])
  summary = json.loads((work / "summary.json").read_text())
  assert summary["status"] == "done" and summary["steps"] == STEPS
  assert summary["num_devices"] == 4
  for i in (0, 1):  # per-process logs; each process resumed and trained
    log = (tmp_path / "logs" / f"process-{i}.log").read_text()
    assert "resumed" in log and f"step {STEPS - 1}/{STEPS}" in log, log[-2000:]

  # no second writer: process 1 writes none of the result files; process 0 writes them all
  assert written(tmp_path, "1", work) == set()
  assert set(RESULT_FILES) <= written(tmp_path, "0", work)
  assert len(list(work.glob("events.out.tfevents*"))) - events_before <= 1  # TensorBoard: one


@pytest.mark.slow
def test_preemption_of_one_process_stops_both_at_one_step_then_one_process_finishes(
    reference, tmp_path):
  """SIGTERM to process 1 only: both processes agree on a step, checkpoint it together and stop
  (a per-process flag would deadlock). Then one process resumes that 2-process checkpoint and
  finishes with the reference's losses."""
  work = tmp_path / "run"
  proc, out = start_two(tmp_path, work, tmp_path / "logs")
  deadline = time.time() + 120
  pids = None
  while time.time() < deadline and proc.poll() is None:
    text = out.read_text()
    if pids is None and "started 2 processes (pids" in text:
      pids = [int(p) for p in text.split("(pids ")[1].split(")")[0].split()]
    log1 = tmp_path / "logs" / "process-1.log"
    if pids and log1.exists() and "Rank 1 is connected" in log1.read_text():
      os.kill(pids[1], signal.SIGTERM)  # after jax.distributed started: the notice is caught
      break
    time.sleep(0.1)
  assert pids is not None, out.read_text()[-2000:]
  wait_two(proc, out)

  summary = json.loads((work / "summary.json").read_text())
  stop = summary["steps"]
  assert summary["status"] == "preempted" and 0 < stop < STEPS, summary
  assert str(stop) in [p.name for p in (work / "checkpoints").iterdir()]
  for i in (0, 1):
    log = (tmp_path / "logs" / f"process-{i}.log").read_text()
    assert f"preempted after {stop} steps" in log, log[-2000:]
  assert_close(losses(work), losses(reference), range(stop))
  assert written(tmp_path, "1", work) == set()

  resumed = run_one(tmp_path, work)
  assert f"resumed {work} from step {stop}" in resumed.stderr
  assert_close(losses(work), losses(reference), range(STEPS))
  assert evals(work)[STEPS] == pytest.approx(evals(reference)[STEPS], rel=1e-5)
  assert json.loads((work / "summary.json").read_text())["status"] == "done"


def _pids(out) -> list[int]:
  """The two process ids launch/gpu/run.sh prints, once it has."""
  deadline = time.time() + 60
  while time.time() < deadline:
    text = out.read_text()
    if "started 2 processes (pids" in text:
      return [int(p) for p in text.split("(pids ")[1].split(")")[0].split()]
    time.sleep(0.1)
  raise AssertionError(out.read_text()[-2000:])


def _wait_for_step(log, step: int, timeout: float = 120) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if log.exists() and f"step {step}/" in log.read_text():
      return
    time.sleep(0.1)
  raise AssertionError(log.read_text()[-2000:] if log.exists() else f"no {log}")


def _gone(pid: int) -> bool:
  try:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
  except FileNotFoundError:
    return True


LONG = {"train.steps": 200, "train.eval_every": 100, "train.ckpt_every": 5}  # ~seconds, not ms


@pytest.mark.slow
@pytest.mark.faults
def test_a_stalled_process_stops_its_peer_within_the_limit_and_nothing_is_left(
    tmp_path, monkeypatch):
  """Process 1 is stopped (SIGSTOP: alive, holding its peer in the next collective). Process 0's
  watchdog ends it after STABILITY_STALL_TIMEOUT_S with a message naming it; the launcher then
  kills the stopped one. The run is marked interrupted, and a rerun resumes and finishes it."""
  monkeypatch.setenv("STABILITY_STALL_TIMEOUT_S", "8")
  monkeypatch.setenv("STABILITY_SIGTERM_GRACE_S", "2")
  work = tmp_path / "run"
  proc, out = start_two(tmp_path, work, tmp_path / "logs", **LONG)
  pids = _pids(out)
  deadline = time.time() + 120
  while not (work / "checkpoints" / "5").exists() and time.time() < deadline:
    time.sleep(0.05)
  os.kill(pids[1], signal.SIGSTOP)  # after the first checkpoint, long before the last step
  stopped = time.time()
  proc.wait(timeout=120)
  assert proc.returncode == 75, out.read_text()[-3000:]
  assert time.time() - stopped < 8 + 40
  log0 = (tmp_path / "logs" / "process-0.log").read_text()
  assert "process 0 of 2 waited 8 s for" in log0, log0[-2000:]
  assert all(_gone(p) for p in pids)
  summary = json.loads((work / "summary.json").read_text())
  assert summary["status"] == "interrupted" and "waited 8 s" in summary["error"], summary

  resumed = run_one(tmp_path, work, **LONG)
  assert re.search(f"resumed {re.escape(str(work))} from step [1-9]", resumed.stderr)
  assert json.loads((work / "summary.json").read_text())["status"] == "done"


@pytest.mark.slow
@pytest.mark.faults
def test_killing_the_launcher_stops_both_processes(tmp_path):
  """SIGKILL to launch/gpu/run.sh (no trap runs): each process ends and says its launcher is gone,
  whether its own watch saw it first or its peer's exit failed its step first."""
  proc, out = start_two(tmp_path, tmp_path / "run", tmp_path / "logs", **LONG)
  pids = _pids(out)
  _wait_for_step(tmp_path / "logs" / "process-0.log", 2)
  proc.kill()
  proc.wait()
  deadline = time.time() + 30
  while not all(_gone(p) for p in pids) and time.time() < deadline:
    time.sleep(0.2)
  assert all(_gone(p) for p in pids), [pathlib.Path(f"/proc/{p}/cmdline").exists() for p in pids]
  for i in (0, 1):
    log = (tmp_path / "logs" / f"process-{i}.log").read_text()
    assert "its launcher (pid" in log, log[-2000:]


@pytest.mark.slow
@pytest.mark.faults
def test_sigterm_to_the_launcher_stops_both_processes_at_one_checkpoint(tmp_path):
  """SIGTERM to launch/gpu/run.sh is passed on: both processes checkpoint one step and stop."""
  work = tmp_path / "run"
  proc, out = start_two(tmp_path, work, tmp_path / "logs", **LONG)
  pids = _pids(out)
  _wait_for_step(tmp_path / "logs" / "process-0.log", 2)
  proc.send_signal(signal.SIGTERM)
  proc.wait(timeout=120)
  assert proc.returncode == 0, out.read_text()[-3000:]
  assert all(_gone(p) for p in pids)
  summary = json.loads((work / "summary.json").read_text())
  assert summary["status"] == "preempted" and 0 < summary["steps"] < LONG["train.steps"]
  assert str(summary["steps"]) in [p.name for p in (work / "checkpoints").iterdir()]
