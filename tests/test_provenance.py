"""stability.provenance: the software and corpus a run trained with, and how analysis reads them."""

import json
import pathlib
import os
import platform
import subprocess

import jax
import pytest

from analysis import compare
from analysis import results
from configs import base
from stability.data import common as data_common
from stability.data import embedded_corpus
from stability import provenance
from tests._runs_fixture import make_sweep


def test_record_names_python_packages_flags_and_no_corpus_without_the_embedded_source(
    monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=")
  got = provenance.record(base.get_config("size=d64-L2,data=synthetic").data,
                          {"xla_cpu_experimental_ynn_fusion_type": ""})
  assert got["python"] == platform.python_version()
  assert got["jax"] == jax.__version__ and got["jaxlib"] and got["flax"] and got["optax"]
  assert got["xla_flags"] == "--xla_cpu_experimental_ynn_fusion_type="
  assert got["compiler_options"] == {"xla_cpu_experimental_ynn_fusion_type": ""}
  assert got["cpus"] == len(os.sched_getaffinity(0))
  assert "corpus" not in got


def test_record_of_the_embedded_source_names_its_corpus():
  data = base.get_config("size=d64-L2,data=embedded").data
  got = provenance.record(data, {})["corpus"]
  assert got == embedded_corpus.fingerprint(data_common.cache_dir(data.embedded.cache_dir))
  assert got["corpus"].endswith(platform.python_version()) and len(got["sha256"]) == 64


def test_code_version_is_the_last_commit_of_the_training_code():
  root = pathlib.Path(__file__).resolve().parents[1]
  git = subprocess.run(["git", "-C", str(root), "log", "-1", "--format=%H", "--", "stability",
                        "configs"], capture_output=True, text=True, check=False)
  if git.returncode or not (root / ".git").exists():
    pytest.skip("not a git checkout")
  commit = git.stdout.strip()
  assert provenance.code_version() in (commit, f"{commit}-dirty")
  assert provenance.software()["code"] == provenance.code_version()


def test_entries_older_records_lack():
  """Records from before `code` and `compiler_options` existed: the missing code is unknown, not
  changed; the missing options were none (the programs had no options then)."""
  older = {"from_step": 0, "python": "3.11.7", "jax": "0.12.0"}
  newer = {**older, "code": "abc", "compiler_options": {}}
  assert provenance.differences(older, newer) == []
  assert provenance.continued([older], 100, newer) == [older]
  off = {**newer, "compiler_options": {"xla_cpu_experimental_ynn_fusion_type": ""}}
  assert provenance.differences(older, off) == [
      "compiler_options {} -> {'xla_cpu_experimental_ynn_fusion_type': ''}"]


def test_a_resume_adds_a_record_only_when_something_changed():
  now = {"python": "3.11.7", "jax": "0.10.2", "xla_flags": ""}
  first = provenance.continued([], 0, now)
  assert first == [{"from_step": 0, **now}]
  assert provenance.continued(first, 150, dict(now)) is first
  later = {**now, "jax": "0.12.0"}
  assert provenance.differences(first[-1], later) == ["jax 0.10.2 -> 0.12.0"]
  assert provenance.continued(first, 150, later) == [*first, {"from_step": 150, **later}]


def _record(**changes):
  return {"from_step": 0, "code": "0123456789abcdef", "python": "3.11.7", "jax": "0.10.2",
          "xla_flags": "", "compiler_options": {},
          "corpus": {"sha256": "f6a36bb5cc0e" + "0" * 52}, **changes}


def _add_provenance(sweep, histories):
  """Writes each run's `provenance` into its summary, in the sweep's order."""
  for run_dir, history in zip(results.load_runs(str(sweep))["run_dir"], histories):
    path = f"{run_dir}/summary.json"
    with open(path) as f:
      summary = json.load(f)
    with open(path, "w") as f:
      json.dump({**summary, "provenance": history}, f)


def test_runs_table_and_compare_name_the_software(tmp_path):
  losses = {("qkln-on", "d64-L2"): {1e-3: 3.0, 1e-2: 2.5, 1e-1: 2.8}}
  a = make_sweep(tmp_path / "a", losses)
  b = make_sweep(tmp_path / "b", losses)
  resumed = [_record(), _record(from_step=150, jax="0.12.0", xla_flags="--x=",
                                compiler_options={"o": ""})]
  _add_provenance(b, [[_record()], [_record()], resumed])

  runs = results.load_runs(str(b))
  assert list(runs["jax"]) == ["0.10.2", "0.10.2", "0.12.0"]
  assert list(runs["software_changed"]) == [False, False, True]
  assert runs["corpus_sha256"].str.startswith("f6a36bb5cc0e").all()
  assert results.load_runs(str(a))["python"].isna().all()

  assert compare.software(results.load_runs(str(a))) == ["not recorded (3 runs)"]
  assert compare.software(runs) == [
      "code 0123456789ab, python 3.11.7, jax 0.10.2, XLA_FLAGS '', compiler options {}, "
      "corpus f6a36bb5cc0e (2 runs)",
      "code 0123456789ab, python 3.11.7, jax 0.12.0, XLA_FLAGS '--x=', compiler options "
      '{"o": ""}, corpus f6a36bb5cc0e (1 run)',
      "resumed under other software or data: 1 (their summaries' provenance)"]


@pytest.mark.parametrize("summary", [{}, {"provenance": []}, {"provenance": ["torn"]},
                                     {"provenance": {"python": "3.11.7"}},
                                     {"provenance": [{"corpus": "torn"}]}])
def test_runs_without_a_usable_record_read_as_unrecorded(tmp_path, summary):
  run = make_sweep(tmp_path / "s", {("arm", "d64-L2"): {1e-2: 3.0}})
  _add_provenance(run, [summary.get("provenance")])
  row = results.load_runs(str(run)).iloc[0]
  assert row["python"] is None and row["corpus_sha256"] is None
  assert row["software_changed"] is None


def test_a_run_resumed_from_an_unrecorded_checkpoint_has_unknown_changes(tmp_path):
  run = make_sweep(tmp_path / "s", {("arm", "d64-L2"): {1e-2: 3.0}})
  _add_provenance(run, [[_record(from_step=100)]])
  row = results.load_runs(str(run)).iloc[0]
  assert row["python"] == "3.11.7" and row["software_changed"] is None
