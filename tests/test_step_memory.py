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
  """config.model as the accelerator scales set it."""
  c = config_schema.default_config().model
  sizes.apply(c, size)
  c.update(seq_len=seq_len, head_chunk_tokens=chunk, head_impl="fused", attention_impl="fused")
  return c


@pytest.mark.parametrize("size", MEASURED)
def test_rule_matches_the_measured_peaks(size):
  microbatches, gib = MEASURED[size]
  predicted = step_memory.step_bytes(model_cfg(size), 256 * 512 // microbatches, 32101) / 2**30
  assert predicted == pytest.approx(gib, rel=0.05)


def test_rule_matches_the_plain_head_measured_at_four_microbatches():
  c = model_cfg("d256-L3")
  c.head_impl = "plain"
  assert step_memory.step_bytes(c, 256 * 512 // 4, 32101) / 2**30 == pytest.approx(9.38, rel=0.05)


def test_fewest_microbatches_that_fit_are_the_measured_ones():
  got = {s: step_memory.microbatches_to_fit(model_cfg(s), 256, 32101) for s in MEASURED}
  assert got == {s: m for s, (m, _) in MEASURED.items()}
  assert step_memory.microbatches_to_fit(model_cfg("d2048-L24"), 256, 32101) == 16
  # A model whose state alone is over the budget must be sharded: microbatches cannot help.
  assert step_memory.microbatches_to_fit(model_cfg("d4096-L24"), 256, 32101) == 1


def test_microbatches_divide_the_batch_and_count_the_log_step():
  c = model_cfg("d512-L6")
  two_rows = step_memory.step_bytes(c, 2 * 512, 32101, log_step=True)
  # 12 rows in microbatches of at most 2: 5 does not divide 12, so 6.
  assert step_memory.microbatches_to_fit(c, 12, 32101, budget=two_rows) == 6
  # A budget the train step fits in but the log step (its extra scores) does not.
  train_only = step_memory.step_bytes(c, 12 * 512, 32101)
  assert step_memory.microbatches_to_fit(c, 12, 32101, budget=train_only) > 1
  # Explicit attention keeps its scores for the backward pass: more microbatches.
  explicit = model_cfg("d1024-L24")
  explicit.attention_impl = "explicit"
  assert step_memory.microbatches_to_fit(explicit, 256, 32101) > 4
  # No microbatch fits, but the state does: one row each.
  one_row = step_memory.step_bytes(c, 512, 32101, log_step=True)
  assert step_memory.microbatches_to_fit(c, 12, 32101, budget=one_row * 0.99) == 12


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
  assert {c.model.head_impl for c in cpu.values()} == {"plain"}
  assert {s: c.train.grad_accum for s, c in cpu.items()} == {"d64-L2": 1, "d128-L2": 1,
                                                             "d128-L4": 2}


def test_cpu_microbatches_keep_each_ones_activations_in_the_cache_budget():
  """The fewest divisors of the batch whose rows' activations fit; the state does not count."""
  c = model_cfg("d192-L4", seq_len=128)
  c.update(head_impl="plain", attention_impl="explicit")
  state = step_memory.step_bytes(c, 0, 259)

  def rows(n):  # the activations of a microbatch of n rows
    return step_memory.step_bytes(c, n * 128, 259, log_step=True) - state

  assert step_memory.step_bytes(c, 16 * 128, 259, log_step=True) > rows(16)
  assert step_memory.microbatches_for_cache(c, 16, 259, budget=rows(16)) == 1
  assert step_memory.microbatches_for_cache(c, 16, 259, budget=rows(4)) == 4
  assert step_memory.microbatches_for_cache(c, 16, 259, budget=rows(4) * 0.99) == 8
  assert step_memory.microbatches_for_cache(c, 12, 259, budget=rows(4)) == 3
  assert step_memory.microbatches_for_cache(c, 16, 259, budget=1.0) == 16


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
