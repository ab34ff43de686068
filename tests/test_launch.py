"""launch/tpu/pod.py (gcloud commands, dry run, babysitting) and the launch/gpu scripts."""

import os
import pathlib
import shlex
import subprocess
import time

import pytest

from launch.tpu import pod

REPO = pathlib.Path(__file__).resolve().parents[1]
WHERE = ["--name=stab", "--accelerator=v4-32", "--zone=us-central2-b", "--project=proj"]


@pytest.fixture
def no_subprocess(monkeypatch):
  """Any attempt to run a command fails the test."""
  def refuse(*args, **kwargs):
    raise AssertionError(f"a command was run in a dry run: {args[:1]}")
  for name in ("run", "Popen", "call", "check_call", "check_output"):
    monkeypatch.setattr(subprocess, name, refuse)
  monkeypatch.setattr(os, "system", refuse)


def printed_commands(out: str) -> list[list[str]]:
  return [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ ")]


def remote_script(cmd: list[str]) -> str:
  (arg,) = [a for a in cmd if a.startswith("--command=")]
  return arg.removeprefix("--command=")


def detached_inner(script: str) -> str:
  """The command line that `bash -c` runs on a worker, as the worker's shell passes it on."""
  words = shlex.split(script)
  return words[words.index("-c") + 1]


@pytest.mark.parametrize("accelerator, workers", [
    ("v4-8", 1), ("v4-32", 4), ("v5p-128", 16), ("v5e-8", 1), ("v5litepod-16", 4), ("v6e-64", 16)])
def test_num_workers(accelerator, workers):
  assert pod.num_workers(accelerator) == workers


def test_create_and_delete_dry_run(no_subprocess, capsys):
  assert pod.main(["create", *WHERE, "--spot", "--dry_run"]) == 0
  assert pod.main(["delete", *WHERE, "--dry_run"]) == 0
  create, delete = printed_commands(capsys.readouterr().out)
  assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "stab",
                    "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot",
                    "--project=proj", "--zone=us-central2-b"]
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "stab", "--quiet",
                    "--project=proj", "--zone=us-central2-b"]


def test_setup_dry_run_copies_the_work_tree_to_every_worker(no_subprocess, capsys):
  assert pod.main(["setup", *WHERE, "--dry_run"]) == 0
  scp, ssh = printed_commands(capsys.readouterr().out)
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
  assert scp[6] == "stab:stability.tar.gz" and "--worker=all" in scp
  assert ssh[4:6] == ["ssh", "stab"] and "--worker=all" in ssh
  assert '-e "$HOME/stability[tpu,tf]"' in remote_script(ssh)


def test_setup_from_a_git_url(no_subprocess, capsys):
  assert pod.main(["setup", *WHERE, "--dry_run", "--repo_url=https://example.com/me/s.git",
                   "--ref=v1"]) == 0
  (ssh,) = printed_commands(capsys.readouterr().out)
  script = remote_script(ssh)
  assert "git clone --quiet https://example.com/me/s.git $HOME/stability" in script
  assert "checkout --quiet v1" in script


def test_run_starts_the_same_command_on_all_workers(no_subprocess, capsys):
  job = ["python", "-m", "stability.main", "--config=configs/base.py:size=d2048-L24",
         "--workdir=gs://bucket/runs/x"]
  assert pod.main(["run", *WHERE, "--dry_run", "--env=XLA_FLAGS=--xla_foo=1", "--", *job]) == 0
  (ssh,) = printed_commands(capsys.readouterr().out)
  assert ssh[4:6] == ["ssh", "stab"] and "--worker=all" in ssh
  inner = detached_inner(remote_script(ssh))
  assert shlex.join(job) in inner
  assert "STABILITY_DISTRIBUTED=1" in inner and "XLA_FLAGS=--xla_foo=1" in inner
  assert "$HOME/stability-logs/train.exit" in inner


@pytest.mark.parametrize("override", ["--set=model.remat=full", "--config.model.remat=full"])
def test_sweep_runs_pod_sweep_everywhere(no_subprocess, capsys, override):
  assert pod.main(["sweep", *WHERE, "--dry_run", "--experiment=configs/fig1_qk_layernorm.py:"
                   "scale=paper", "--out=gs://bucket/fig1", override]) == 0
  (ssh,) = printed_commands(capsys.readouterr().out)
  inner = shlex.split(detached_inner(remote_script(ssh)).split("&& ", 2)[-1].split(";")[0])
  assert inner == ["python", "-m", "launch.tpu.pod_sweep",
                   "--experiment=configs/fig1_qk_layernorm.py:scale=paper",
                   "--out=gs://bucket/fig1", "--set=model.remat=full"]


@pytest.mark.parametrize("bad, says", [
    (["--experiment=configs/fig1_qklayernorm.py:scale=paper", "--out=gs://b/f"], "no file"),
    (["--experiment=configs/fig1_qk_layernorm.py:scale=papr", "--out=gs://b/f"], "papr"),
    (["--experiment=configs/fig1_qk_layernorm.py:scale=paper", "--out=gs://b/f",
      "--set=model.remat=ful"], "model.remat"),
    (["--experiment=configs/fig1_qk_layernorm.py:scale=paper", "--out=gs://b/f",
      "--config.opt.eps=-1"], "opt.eps"),
    (["--experiment=configs/fig1_qk_layernorm.py:scale=paper", "--out=results/fig1"], "gs://")])
def test_a_bad_sweep_stops_before_any_gcloud_call(no_subprocess, capsys, bad, says):
  """Checked in --dry_run too: a real launch would otherwise pay for the slice first."""
  assert pod.main(["sweep", *WHERE, "--dry_run", *bad]) == 2
  captured = capsys.readouterr()
  assert not printed_commands(captured.out)
  (line,) = captured.err.strip().splitlines()
  assert line.startswith("error:") and says in line


def test_shell_metacharacters_reach_the_job_as_text(no_subprocess, capsys):
  evil = "--workdir=gs://b/$(touch /tmp/pwned); rm -rf ~ 'x"
  assert pod.main(["run", *WHERE, "--dry_run", "--", "python", "-m", "stability.main", evil]) == 0
  (ssh,) = printed_commands(capsys.readouterr().out)
  inner = detached_inner(remote_script(ssh))
  command = inner.split("&& ", 2)[-1].rsplit(";", 1)[0]
  assert shlex.split(command)[-1] == evil


@pytest.mark.parametrize("bad", [["--name=x; rm -rf /"], ["--name=Stab"], ["--job=a b"]])
def test_bad_names_are_refused_before_anything_runs(no_subprocess, capsys, bad):
  args = [a for a in WHERE if not a.startswith(bad[0].split("=")[0] + "=")] + bad
  assert pod.main(["run", *args, "--dry_run", "--", "python", "-V"]) == 2


def test_logs_copies_each_workers_log(no_subprocess, capsys):
  assert pod.main(["logs", *WHERE, "--dry_run", "--job=train", "--logs_dir=/tmp/l"]) == 0
  cmds = printed_commands(capsys.readouterr().out)
  assert [c[4] for c in cmds] == ["scp"] * 4
  assert [c[7] for c in cmds] == [f"--worker={i}" for i in range(4)]
  assert all(c[5] == "stab:stability-logs/train.log" for c in cmds)
  assert cmds[3][6] == "/tmp/l/stab/worker-3.log"


def test_babysit_dry_run_shows_one_recovery_pass(no_subprocess, capsys):
  assert pod.main(["babysit", *WHERE, "--spot", "--dry_run", "--experiment=configs/"
                   "fig1_qk_layernorm.py:scale=paper", "--out=gs://bucket/fig1"]) == 0
  cmds = printed_commands(capsys.readouterr().out)
  assert [c[4] for c in cmds] == ["describe", "create", "scp", "ssh", "ssh", "ssh"]
  assert "--spot" in cmds[1]
  assert "--worker=0" in cmds[-1]  # the status check


@pytest.mark.parametrize("text, state", [
    ("running\nage 12\n", ("running", 12.0)), ("exit 0\nage 5\n", ("done", 5.0)),
    ("exit 1\nage 5\n", ("failed", 5.0)), ("exit 75\nage 1\n", ("preempted", 1.0)),
    ("exit 0\npreempted\nage 3\n", ("preempted", 3.0)), ("dead\n", ("dead", 0.0)),
    ("", ("unknown", 0.0))])
def test_parse_status(text, state):
  assert pod.parse_status(text) == state


class FakePod:
  """Scripted slice states and job statuses; records what babysit does."""

  def __init__(self, states, statuses):
    self.name, self.dry_run = "stab", False
    self.states, self.statuses, self.done = list(states), list(statuses), []

  def state(self):
    return self.states.pop(0)

  def job_status(self, job):
    return self.statuses.pop(0)

  def __getattr__(self, verb):  # create, delete, setup, start
    return lambda *args, **kwargs: self.done.append(verb)


def test_babysit_recreates_a_preempted_slice_and_relaunches_until_done():
  fake = FakePod(
      states=[None, "CREATING", "READY", "READY", "PREEMPTED", "READY", "READY", "READY"],
      statuses=[("dead", 0), ("running", 10), ("dead", 0), ("failed", 0), ("done", 0)])
  job = pod.Job("fig1", ["python", "-V"])
  code = pod.babysit(fake, job, setup_kw={}, poll_s=0, max_restarts=3, stall_s=60,
                     sleep=lambda s: None)
  assert code == 0
  assert fake.done == ["create", "setup", "start",            # missing: create, set up, start
                       "delete", "create", "setup", "start",  # preempted: a new slice, relaunch
                       "start"]                               # failed: relaunch (it resumes)


def test_babysit_relaunches_a_stalled_job_and_gives_up_after_max_restarts():
  fake = FakePod(states=["READY"] * 5,
                 statuses=[("running", 0), ("running", 7200), ("dead", 0), ("dead", 0)])
  code = pod.babysit(fake, pod.Job("j", ["x"]), setup_kw={}, poll_s=0, max_restarts=2,
                     stall_s=3600, sleep=lambda s: None)
  assert code == 1
  assert fake.done == ["start", "start"]  # a running job is never re-installed under


def test_gpu_scripts_parse_and_refuse_an_empty_command():
  for script in ("launch/gpu/run.sh", "launch/gpu/slurm.sbatch"):
    subprocess.run(["bash", "-n", str(REPO / script)], check=True)
  result = subprocess.run(["bash", str(REPO / "launch/gpu/run.sh"), "--per_gpu"],
                          capture_output=True, text=True)
  assert result.returncode == 2 and "usage" in result.stderr


def test_stop_dry_run_stops_the_job_on_every_worker(no_subprocess, capsys):
  assert pod.main(["stop", *WHERE, "--dry_run", "--job=fig1"]) == 0
  (ssh,) = printed_commands(capsys.readouterr().out)
  assert "--worker=all" in ssh
  assert remote_script(ssh) == pod.Job("fig1", []).stop_script()


@pytest.mark.slow
def test_stop_script_ends_a_job_that_ignores_sigterm_after_the_grace(tmp_path):
  """The worker side of `stop` (and of a relaunch), run here: the job's whole process group is
  gone within the grace, SIGKILL ending what SIGTERM did not."""
  logs = tmp_path / "stability-logs"
  logs.mkdir()
  job = subprocess.Popen(["bash", "-c", "trap '' TERM; sleep 300 & wait"],
                         start_new_session=True)  # a process group, as setsid makes on a worker
  (logs / "j.pid").write_text(str(job.pid))
  start = time.time()
  subprocess.run(["bash", "-c", pod.Job("j", []).stop_script(grace_s=2)], check=True, timeout=60,
                 env={**os.environ, "HOME": str(tmp_path)})
  job.wait(timeout=10)
  assert 1.5 < time.time() - start < 30
  assert not _running_in_group(job.pid)


def _running_in_group(pgid: int) -> list[int]:
  """Processes of process group `pgid` that are not zombies (an orphan's zombie may wait for
  its reaper a while)."""
  running = []
  for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
    try:
      fields = stat.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
      continue
    if int(fields[2]) == pgid and fields[0] != "Z":
      running.append(int(stat.parent.name))
  return running
