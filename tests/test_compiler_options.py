"""stability.compiler_options: when the training programs turn XLA:CPU's YNNPACK fusions off."""

import jax
import jax.numpy as jnp
import pytest

from configs import base
from stability import compiler_options as co
from stability import run as run_lib

BYTES, WORDS = 259, 32101


pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU options")


@pytest.fixture
def jax_version(monkeypatch):
  monkeypatch.delenv(co.ENV, raising=False)
  monkeypatch.setenv("XLA_FLAGS", "")
  return lambda *version: monkeypatch.setattr(jax, "__version_info__", version)


@pytest.mark.parametrize("version, vocab, off", [((0, 10, 2), BYTES, True),
                                                 ((0, 10, 2), WORDS, False),
                                                 ((0, 12, 0, 1), BYTES, True),
                                                 ((0, 12, 0, 1), WORDS, False),
                                                 ((1, 0, 0), BYTES, True)])
def test_auto_turns_them_off_for_small_vocabularies_on_every_jax(jax_version, version, vocab,
                                                                   off):
  jax_version(*version)
  assert co.ynn_fusions_off(vocab) is off
  assert co.for_training(vocab) == ({co.YNN_FUSIONS: ""} if off else {})


def test_the_environment_chooses_and_xla_flags_rule(jax_version, monkeypatch):
  jax_version(0, 10, 2)
  monkeypatch.setenv(co.ENV, "off")
  assert co.ynn_fusions_off(WORDS)
  jax_version(0, 12, 0)
  monkeypatch.setenv(co.ENV, "xla")
  assert not co.ynn_fusions_off(BYTES)
  monkeypatch.setenv(co.ENV, "off")
  monkeypatch.setenv("XLA_FLAGS", f"--{co.YNN_FUSIONS}=dot")  # the user's own choice
  assert co.for_training(BYTES) == {}
  monkeypatch.setenv(co.ENV, "no")
  monkeypatch.setenv("XLA_FLAGS", "")
  with pytest.raises(ValueError, match="STABILITY_CPU_YNN_FUSIONS='no'"):
    co.for_training(BYTES)


def test_no_options_for_other_platforms_and_a_bad_choice_stops_the_entry_point(jax_version,
                                                                              monkeypatch):
  jax_version(0, 12, 0)
  monkeypatch.setenv(co.ENV, "off")
  assert co.for_training(BYTES, "gpu") == {} and co.for_training(BYTES, "tpu") == {}
  assert co.for_training(BYTES, "cpu") == {co.YNN_FUSIONS: ""}
  from stability import runtime
  monkeypatch.setenv(co.ENV, "of")
  with pytest.raises(ValueError, match="expected one of auto, xla, off"):
    runtime.prepare_training_process()


def _compiled_step_text(monkeypatch, choice: str) -> str:
  monkeypatch.setenv(co.ENV, choice)
  config = base.get_config("size=d64-L2,data=synthetic")
  config.data.batch_size, config.model.seq_len = 4, 16
  run = run_lib.Run([config], BYTES)
  tokens = jax.ShapeDtypeStruct((4, 17), jnp.int32, sharding=run.batch_sharding)
  with run.context():
    lowered = run.compiled_step(False).lower(run.abstract_state, tokens, run.hypers)
  return lowered.compile().as_text()


def test_the_train_step_compiles_without_ynnpack_fusions_when_off(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "")
  assert "ynn_fusion" in _compiled_step_text(monkeypatch, "xla")  # XLA's default uses them
  assert "ynn_fusion" not in _compiled_step_text(monkeypatch, "off")
