"""A Cloud TPU pod slice, driven by gcloud: create, set up, run, logs, babysit, delete.

  P="--name=stab --accelerator=v4-32 --zone=us-central2-b --project=my-project"
  python -m launch.tpu.pod create $P --spot
  python -m launch.tpu.pod setup $P        # copies this work tree; or --repo_url=... --ref=...
  python -m launch.tpu.pod run $P -- python -m stability.main \
      --config=configs/base.py:size=d2048-L24 --workdir=gs://my-bucket/runs/d2048-L24
  python -m launch.tpu.pod sweep $P --experiment=configs/fig1_qk_layernorm.py:scale=paper \
      --out=gs://my-bucket/fig1
  python -m launch.tpu.pod logs $P         # every worker's log, into logs/<name>/
  python -m launch.tpu.pod babysit $P --spot --experiment=... --out=gs://...
  python -m launch.tpu.pod stop $P --job=fig1_qk_layernorm   # SIGTERM, then SIGKILL after 150 s
  python -m launch.tpu.pod delete $P

Every worker runs the same command (JAX multi-controller: one process per host, together one
program); `STABILITY_DISTRIBUTED=1` makes `stability.sharding` start `jax.distributed`. Results
and checkpoints must go to a bucket (gs://...) that every worker reaches. Jobs run detached on
the workers, logging to ~/stability-logs/<job>.log. `babysit` re-creates a preempted slice and
relaunches the job until it finishes: a run resumes from its checkpoint, a sweep skips finished
points. Every gcloud command is printed before it runs; --dry_run prints them and runs nothing.
"""

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time

import configs

# Default runtime image per TPU generation.
RUNTIME_VERSIONS = {"v4": "tpu-ubuntu2204-base", "v5e": "v2-alpha-tpuv5-lite",
                    "v5litepod": "v2-alpha-tpuv5-lite", "v5p": "v2-alpha-tpuv5",
                    "v6e": "v2-alpha-tpuv6e"}
REMOTE_CODE = "$HOME/stability"
REMOTE_VENV = "$HOME/venv"
REMOTE_LOGS = "$HOME/stability-logs"
EXIT_PREEMPTED = 75  # launch.tpu.pod_sweep, and stability.watchdog: stopped early, relaunch it
# A stopped job's processes get the watchdog's SIGTERM grace (120 s) and 30 s more, then SIGKILL.
STOP_GRACE_S = 150
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_JOB = re.compile(r"^[A-Za-z0-9_.-]+$")


def num_workers(accelerator: str) -> int:
  """Hosts of a slice: v4-32 -> 4 (4 chips, 8 TensorCores each), v5e-8 -> 1, v5e-16 -> 4."""
  m = re.fullmatch(r"(v4|v5p|v5e|v5litepod|v6e)-(\d+)", accelerator)
  if not m:
    raise ValueError(f"--accelerator={accelerator!r}: expected e.g. v4-32, v5p-64, v5e-16, v6e-8")
  gen, n = m.group(1), int(m.group(2))
  if gen in ("v4", "v5p"):
    return max(1, n // 8)
  return 1 if n <= 8 else n // 4


def runtime_version(accelerator: str) -> str:
  return RUNTIME_VERSIONS[accelerator.split("-")[0]]


@dataclasses.dataclass
class Pod:
  """Builds and runs the gcloud commands of one slice."""
  name: str
  accelerator: str
  zone: str = ""
  project: str = ""
  spot: bool = False
  version: str = ""
  dry_run: bool = False

  def __post_init__(self):
    if not _NAME.match(self.name):
      raise ValueError(f"--name={self.name!r}: lowercase letters, digits and '-', starting with "
                       "a letter (a GCE resource name)")
    self.workers = num_workers(self.accelerator)
    self.version = self.version or runtime_version(self.accelerator)

  # --- commands -------------------------------------------------------------------------------

  def _gcloud(self, verb: str, *args: str) -> list[str]:
    where = [f"--project={self.project}"] * bool(self.project) + [f"--zone={self.zone}"] * bool(
        self.zone)
    return ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, *where]

  def create_cmd(self) -> list[str]:
    return self._gcloud("create", self.name, f"--accelerator-type={self.accelerator}",
                        f"--version={self.version}", *(["--spot"] if self.spot else []))

  def describe_cmd(self) -> list[str]:
    return self._gcloud("describe", self.name, "--format=value(state)")

  def delete_cmd(self) -> list[str]:
    return self._gcloud("delete", self.name, "--quiet")

  def ssh_cmd(self, command: str, worker: str = "all") -> list[str]:
    return self._gcloud("ssh", self.name, f"--worker={worker}", f"--command={command}")

  def scp_cmd(self, src: str, dst: str, worker: str = "all") -> list[str]:
    return self._gcloud("scp", src, dst, f"--worker={worker}")

  # --- running ----------------------------------------------------------------------------------

  def call(self, cmd: list[str], *, check: bool = True, capture: bool = False
           ) -> subprocess.CompletedProcess:
    """Prints `cmd`, then runs it (an argument list: no local shell) unless --dry_run."""
    print("+ " + shlex.join(cmd), flush=True)
    if self.dry_run:
      return subprocess.CompletedProcess(cmd, 0, "", "")
    return subprocess.run(cmd, check=check, text=True, capture_output=capture)

  def create(self) -> None:
    self.call(self.create_cmd())

  def delete(self) -> None:
    self.call(self.delete_cmd())

  def state(self) -> str | None:
    """READY, CREATING, PREEMPTED, ...; None when the slice does not exist."""
    result = self.call(self.describe_cmd(), check=False, capture=True)
    return (result.stdout.strip() or None) if result.returncode == 0 else None

  def setup(self, repo_url: str = "", ref: str = "", python: str = "3.11") -> None:
    """Puts the code on every worker and installs it, with the TPU and TF extras, in a venv."""
    if repo_url:
      fetch = (f"rm -rf {REMOTE_CODE} && git clone --quiet {shlex.quote(repo_url)} {REMOTE_CODE}"
               + (f" && git -C {REMOTE_CODE} checkout --quiet {shlex.quote(ref)}" if ref else ""))
    else:
      tarball = self._pack_work_tree()
      self.call(self.scp_cmd(tarball, f"{self.name}:stability.tar.gz"))
      fetch = (f"rm -rf {REMOTE_CODE} && mkdir -p {REMOTE_CODE} && "
               f"tar xzf $HOME/stability.tar.gz -C {REMOTE_CODE}")
    uv = "$HOME/.local/bin/uv"
    install = " && ".join([
        "set -e", fetch,
        f"(test -x {uv} || python3 -m pip install --user --quiet uv)",
        f"(test -x {REMOTE_VENV}/bin/python || {uv} venv --quiet --python {shlex.quote(python)} "
        f"{REMOTE_VENV})",
        f"{uv} pip install --quiet --python {REMOTE_VENV}/bin/python -e "
        f"\"{REMOTE_CODE}[tpu,tf]\"",
        f"{REMOTE_VENV}/bin/python -c 'import jax; print(jax.process_index(), jax.device_count(), "
        "jax.local_device_count(), jax.devices()[0].device_kind)'",
    ])
    self.call(self.ssh_cmd(install))

  def _pack_work_tree(self) -> str:
    """This checkout's tracked and untracked-but-not-ignored files, as a tarball."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.path.join(tempfile.gettempdir(), f"stability-{self.name}.tar.gz")
    print(f"# pack {root} (git ls-files --cached --others --exclude-standard) -> {path}")
    if self.dry_run:
      return path
    listed = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], check=True, capture_output=True).stdout
    with tarfile.open(path, "w:gz") as tar:
      for rel in filter(None, listed.decode().split("\0")):
        if os.path.exists(os.path.join(root, rel)):
          tar.add(os.path.join(root, rel), arcname=rel)
    return path

  def start(self, job: "Job") -> None:
    """Starts `job` detached on every worker (after stopping its previous attempt)."""
    self.call(self.ssh_cmd(job.start_script(distributed=self.workers > 1)))

  def job_status(self, job: "Job") -> tuple[str, float]:
    """(running | done | failed | preempted | dead | unknown, seconds since the log changed)."""
    result = self.call(self.ssh_cmd(job.status_script(), worker="0"), check=False, capture=True)
    if self.dry_run or result.returncode != 0:
      return "unknown", 0.0
    return parse_status(result.stdout)

  def fetch_logs(self, job: "Job", logs_dir: str, tail: int) -> None:
    """Copies every worker's log of `job` into `logs_dir/<name>/worker-<i>.log`; prints tails."""
    local_dir = os.path.join(logs_dir, self.name)
    if not self.dry_run:
      os.makedirs(local_dir, exist_ok=True)
    for i in range(self.workers):
      local = os.path.join(local_dir, f"worker-{i}.log")
      result = self.call(self.scp_cmd(f"{self.name}:stability-logs/{job.name}.log", local,
                                      worker=str(i)), check=False)
      if self.dry_run or result.returncode != 0:
        continue
      with open(local, errors="replace") as f:
        lines = f.readlines()[-tail:]
      print(f"=== worker {i}: {local} (last {len(lines)} lines)")
      print("".join(lines), end="")


@dataclasses.dataclass
class Job:
  """One command that every worker runs, detached, with its log, pid and exit-code files."""
  name: str
  argv: list[str]
  env: dict[str, str] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if not _JOB.match(self.name):
      raise ValueError(f"--job={self.name!r}: letters, digits, '_', '.', '-'")

  def _files(self) -> str:
    return f"{REMOTE_LOGS}/{self.name}"

  def start_script(self, distributed: bool) -> str:
    env = {"PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **self.env}
    if distributed:
      env["STABILITY_DISTRIBUTED"] = "1"
    assignments = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    f = self._files()
    inner = (f"cd {REMOTE_CODE} && export PATH={REMOTE_VENV}/bin:$PATH {assignments} && "
             f"{shlex.join(self.argv)}; echo $? > {f}.exit")
    return " && ".join([
        f"mkdir -p {REMOTE_LOGS}",
        # a previous attempt on this worker: stop its process group (its id is in the pid file)
        self.stop_script(),
        f"rm -f {f}.exit",
        f"echo \"=== $(date -u +%FT%TZ) $(hostname): {self.name}\" >> {f}.log",
        f"(setsid nohup bash -c {shlex.quote(inner)} >> {f}.log 2>&1 < /dev/null & "
        f"echo $! > {f}.pid)",
    ])

  def stop_script(self, grace_s: int = STOP_GRACE_S) -> str:
    """SIGTERM to the job's process group on this worker (it checkpoints and stops, or its
    watchdog ends it), then SIGKILL to whatever is left after `grace_s`."""
    f = self._files()
    return (f"(test -f {f}.pid && pg=$(cat {f}.pid) && kill -TERM -- -$pg 2>/dev/null && "
            f"for i in $(seq {grace_s}); do kill -0 -- -$pg 2>/dev/null || break; sleep 1; done; "
            f"kill -KILL -- -$pg 2>/dev/null; true)")

  def status_script(self) -> str:
    f = self._files()
    return (f"if test -f {f}.exit; then echo exit $(cat {f}.exit); "
            f"tail -n 40 {f}.log | grep -q '\"status\": \"preempted\"' && echo preempted; "
            f"elif test -f {f}.pid && kill -0 $(cat {f}.pid) 2>/dev/null; then echo running; "
            f"else echo dead; fi; "
            f"test -f {f}.log && echo age $(( $(date +%s) - $(stat -c %Y {f}.log) )) || true")


def parse_status(text: str) -> tuple[str, float]:
  """The output of `Job.status_script` -> (state, seconds since the log last changed)."""
  words = text.split()
  age = float(words[words.index("age") + 1]) if "age" in words[:-1] else 0.0
  if "preempted" in words:
    return "preempted", age
  if "running" in words:
    return "running", age
  if "exit" in words[:-1]:
    code = int(words[words.index("exit") + 1])
    return ("done" if code == 0 else "preempted" if code == EXIT_PREEMPTED else "failed"), age
  return ("dead" if "dead" in words else "unknown"), age


_WAIT_STATES = ("CREATING", "STARTING", "RESTARTING", "REPAIRING", "REIMAGING", "DELETING",
                "STOPPING")


def babysit(pod: Pod, job: Job, *, setup_kw: dict, poll_s: float, max_restarts: int,
            stall_s: float, sleep=time.sleep) -> int:
  """Keeps `job` running on `pod` until it finishes: re-creates a lost slice (spot capacity
  errors are retried), relaunches a dead, stalled or preempted job (it resumes), and gives up
  after `max_restarts` relaunches."""
  restarts, set_up = 0, False
  while True:
    try:
      state = pod.state()
      if state in _WAIT_STATES:
        pass
      elif state != "READY":  # missing, PREEMPTED, TERMINATED, STOPPED
        print(f"[babysit] {pod.name} is {state or 'missing'}: (re)creating it", flush=True)
        if state is not None:
          pod.delete()
        pod.create()
        set_up = False
        if pod.dry_run:
          pod.setup(**setup_kw)
          pod.start(job)
          print("[babysit] dry run: one pass shown; then every --poll_s it checks worker 0:")
          pod.job_status(job)
          return 0
      else:
        if not set_up:  # a new slice, or the first sight of an existing one
          status, _ = pod.job_status(job)
          if status == "done":
            return 0
          if status != "running":  # never re-install under a running job
            pod.setup(**setup_kw)
            pod.start(job)
          set_up = True
          sleep(poll_s)
          continue
        status, age = pod.job_status(job)
        print(f"[babysit] {pod.name}: job {job.name} {status} (log idle {age:.0f}s)", flush=True)
        if status == "done":
          return 0
        if status in ("dead", "failed", "preempted") or (status == "running" and age > stall_s):
          if restarts >= max_restarts:
            print(f"[babysit] giving up after {restarts} relaunches", flush=True)
            return 1
          restarts += 1
          print(f"[babysit] relaunching {job.name} ({restarts}/{max_restarts})", flush=True)
          pod.start(job)
    except subprocess.CalledProcessError as e:  # no capacity, a worker unreachable, ...
      print(f"[babysit] {shlex.join(e.cmd)[:200]} failed ({e.returncode}); retrying", flush=True)
    sleep(poll_s)


# --- the command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--name", required=True, help="TPU VM name")
  common.add_argument("--accelerator", required=True, help="v4-32, v5e-16, v5p-64, v6e-8, ...")
  common.add_argument("--zone", default="", help="GCE zone (default: gcloud's)")
  common.add_argument("--project", default="", help="GCP project (default: gcloud's)")
  common.add_argument("--spot", action="store_true", help="a spot (preemptible) slice")
  common.add_argument("--version", default="", help="TPU runtime image (default per generation)")
  common.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
  common.add_argument("--verbose", action="store_true", help="on a bad argument, the traceback")
  setup = argparse.ArgumentParser(add_help=False)
  setup.add_argument("--repo_url", default="", help="git clone this on the workers instead of "
                     "copying the local work tree")
  setup.add_argument("--ref", default="", help="branch, tag or commit of --repo_url")
  setup.add_argument("--python", default="3.11", help="Python version of the workers' venv")
  job = argparse.ArgumentParser(add_help=False)
  job.add_argument("--job", default="", help="job name, names its log files (default: train "
                   "or the experiment's)")
  job.add_argument("--env", action="append", default=[], help="KEY=VALUE for the job, repeatable")
  job.add_argument("--experiment", default="", help="a sweep: configs/<file>.py[:scale=paper], "
                   "one of:\n" + configs.experiment_list())
  job.add_argument("--out", default="", help="the sweep folder, gs://bucket/...")
  job.add_argument("--only", default="", help="sweep points whose name matches this regex")
  job.add_argument("--set", action="append", default=[], help="sweep override key=value (or, as "
                   "stability.main and launch.sweep take them, --config.key=value)")
  job.add_argument("command", nargs=argparse.REMAINDER,
                   help="after `--`: the command every worker runs")

  RAW = argparse.RawTextHelpFormatter  # keeps the experiment list one file a line
  p = argparse.ArgumentParser(prog="python -m launch.tpu.pod", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="verb", required=True)
  sub.add_parser("create", formatter_class=RAW, parents=[common], help="create the slice")
  sub.add_parser("setup", formatter_class=RAW, parents=[common, setup],
                 help="copy the code, install it everywhere")
  sub.add_parser("run", formatter_class=RAW, parents=[common, job],
                 help="start a command on every worker")
  sub.add_parser("sweep", formatter_class=RAW, parents=[common, job],
                 help="start a sweep on every worker")
  logs = sub.add_parser("logs", formatter_class=RAW, parents=[common, job],
                        help="collect every worker's log")
  logs.add_argument("--logs_dir", default="logs")
  logs.add_argument("--tail", type=int, default=20)
  sit = sub.add_parser("babysit", formatter_class=RAW, parents=[common, setup, job],
                       help="keep the job running through preemptions until it finishes")
  sit.add_argument("--poll_s", type=float, default=300)
  sit.add_argument("--max_restarts", type=int, default=20)
  sit.add_argument("--stall_s", type=float, default=3600,
                   help="relaunch a job whose log has not changed for this long")
  sub.add_parser("stop", formatter_class=RAW, parents=[common, job],
                 help="stop the job on every worker: SIGTERM "
                 f"(a checkpoint), then SIGKILL after {STOP_GRACE_S} s")
  sub.add_parser("delete", formatter_class=RAW, parents=[common], help="delete the slice")
  return p


def check_sweep(args, workers: int) -> None:
  """Before any gcloud call: the experiment loads and every point's config (with --set) is
  valid, and on more than one worker --out is storage that every worker reaches."""
  from launch import sweep  # no JAX program is built
  sweep.checked_grid(args.experiment, args.set)
  if workers > 1 and "://" not in args.out:
    raise ValueError(f"--out={args.out}: {workers} workers each write their points there, so "
                     "it must be storage all of them reach (gs://bucket/folder), not a local path")


def job_from_args(args, need_command: bool = True, workers: int = 1) -> Job:
  """A sweep (--experiment, --out) through launch.tpu.pod_sweep, or the command after `--`."""
  command = list(args.command)
  if command[:1] == ["--"]:
    command = command[1:]
  env = dict(item.split("=", 1) for item in args.env)
  if args.experiment:
    if command:
      raise ValueError("give either --experiment/--out or a command after `--`, not both")
    if not args.out:
      raise ValueError("--experiment needs --out=gs://bucket/folder (a folder every worker sees)")
    check_sweep(args, workers)
    command = ["python", "-m", "launch.tpu.pod_sweep", f"--experiment={args.experiment}",
               f"--out={args.out}"] + [f"--only={args.only}"] * bool(args.only) + [
                   f"--set={s}" for s in args.set]
    default_name = os.path.splitext(os.path.basename(args.experiment.split(":")[0]))[0]
  else:
    default_name = "train"
  if need_command and not command:
    raise ValueError("no command: give one after `--`, or --experiment and --out")
  return Job(args.job or default_name, command, env)


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if any(a.startswith("--config.") for a in argv):
    from configs import grid as grid_lib
    argv = grid_lib.config_overrides_as_sets(argv)
  args = _parser().parse_args(argv)
  try:
    pod = Pod(args.name, args.accelerator, args.zone, args.project, args.spot, args.version,
              args.dry_run)
    job = (job_from_args(args, need_command=args.verb not in ("logs", "stop"),
                         workers=pod.workers)
           if args.verb in ("run", "sweep", "logs", "babysit", "stop") else None)
  except ValueError as e:
    if args.verbose:
      raise
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.verb == "sweep" and not args.experiment:
    print("error: sweep needs --experiment and --out", file=sys.stderr)
    return 2
  print(f"# {pod.name}: {pod.accelerator}, {pod.workers} worker(s), image {pod.version}"
        + (", dry run: nothing is executed" if pod.dry_run else ""), flush=True)
  setup_kw = ({"repo_url": args.repo_url, "ref": args.ref, "python": args.python}
              if hasattr(args, "repo_url") else {})
  try:
    if args.verb == "create":
      pod.create()
    elif args.verb == "setup":
      pod.setup(**setup_kw)
    elif args.verb in ("run", "sweep"):
      pod.start(job)
      print(f"# started {job.name} on {pod.workers} worker(s); follow it with: "
            f"python -m launch.tpu.pod logs --name={pod.name} --accelerator={pod.accelerator} "
            f"--job={job.name} ...")
    elif args.verb == "logs":
      pod.fetch_logs(job, args.logs_dir, args.tail)
    elif args.verb == "babysit":
      return babysit(pod, job, setup_kw=setup_kw, poll_s=args.poll_s,
                     max_restarts=args.max_restarts, stall_s=args.stall_s)
    elif args.verb == "stop":
      pod.call(pod.ssh_cmd(job.stop_script()))
    elif args.verb == "delete":
      pod.delete()
  except subprocess.CalledProcessError as e:
    print(f"error: {shlex.join(e.cmd)} exited with {e.returncode}", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
