"""The accelerator scales' step settings: the memory rule, the head choice, batched groups."""

import jax
import pytest

from configs import fig1_qk_layernorm, grid
from launch import sweep
from stability import config_schema
from stability import sizes
from stability import step_memory
from stability.model import ModelConfig

# Peaks measured on an H100 at 256 × 512 tokens, vocab 32,101, fused head with 16,384 tokens per
# chunk, no remat (docs/performance.md): size -> (microbatches, GiB).
MEASURED = {"d256-L3": (1, 7.70), "d512-L6": (1, 21.00), "d768-L12": (2, 30.96),
            "d1024-L24": (4, 43.03)}


def model_cfg(size: str, seq_len: int = 512, chunk: int = 16384):
  c = config_schema.default_config().model
  sizes.apply(c, size)
  c.update(seq_len=seq_len, head_chunk_tokens=chunk)
  return c


@pytest.mark.parametrize("size", MEASURED)
def test_rule_matches_the_measured_peaks(size):
  microbatches, gib = MEASURED[size]
  d, layers, _ = sizes.parse(size)
  predicted = step_memory.step_bytes(d, layers, 256 * 512 // microbatches, 32101, 16384) / 2**30
  assert predicted == pytest.approx(gib, rel=0.05)


def test_fewest_microbatches_that_fit_are_the_measured_ones():
  got = {s: step_memory.microbatches_to_fit(model_cfg(s), 256, 32101) for s in MEASURED}
  assert got == {s: m for s, (m, _) in MEASURED.items()}
  assert step_memory.microbatches_to_fit(model_cfg("d2048-L24"), 256, 32101) == 16
  # A model whose state alone is over the budget must be sharded: microbatches cannot help.
  assert step_memory.microbatches_to_fit(model_cfg("d4096-L24"), 256, 32101) == 1
  # Only divisors of the batch: 12 rows cannot be cut in 8.
  assert 12 % step_memory.microbatches_to_fit(model_cfg("d2048-L24"), 12, 32101) == 0


def configs_of(scale: str) -> dict[str, object]:
  g = fig1_qk_layernorm.get_grid(f"scale={scale}")
  return {p.size: grid.config_for(p, scale) for p in g.points}


def test_accelerator_scales_take_the_fused_head_and_the_fewest_microbatches():
  for scale in ("gpu", "paper"):
    for c in configs_of(scale).values():
      assert (c.model.head_impl, c.model.attention_impl, c.model.remat) == ("fused", "fused",
                                                                            "none")
  paper = configs_of("paper")
  assert {s: paper[s].train.grad_accum for s in ("d512-L6", "d768-L12", "d1024-L24")} == {
      "d512-L6": 1, "d768-L12": 2, "d1024-L24": 4}
  cpu = configs_of("cpu")
  assert {(c.model.head_impl, c.train.grad_accum) for c in cpu.values()} == {("plain", 1)}


def test_a_point_that_sets_its_microbatches_keeps_them():
  point = fig1_qk_layernorm.get_grid("scale=paper").points[0]
  point = grid.Point(point.name, point.arm, "d1024-L24", point.lr,
                     {**point.overrides, "train.grad_accum": 8})
  assert grid.config_for(point, "paper").train.grad_accum == 8


@pytest.mark.parametrize(("vocab", "head"), [(259, "plain"), (8191, "plain"), (8192, "fused"),
                                              (32101, "fused")])
def test_auto_head_is_fused_for_large_vocabularies(vocab, head):
  c = config_schema.default_config().model
  assert c.head_impl == "auto"
  assert ModelConfig.from_config(c, vocab).head_impl == head


def test_batch_auto_groups_small_steps_on_accelerators_only(monkeypatch):
  cpu_grid = fig1_qk_layernorm.get_grid("scale=cpu")  # 16 × 128 tokens per step
  paper_grid = fig1_qk_layernorm.get_grid("scale=paper")  # 256 × 512
  assert (sweep.should_batch("on", paper_grid), sweep.should_batch("off", cpu_grid)) == (True,
                                                                                       False)
  assert jax.default_backend() == "cpu"
  assert not sweep.should_batch("auto", cpu_grid)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert sweep.should_batch("auto", cpu_grid)
  assert not sweep.should_batch("auto", paper_grid)
