"""XLA options the training programs compile with (`jax.jit(..., compiler_options=...)`).

One so far: XLA:CPU's YNNPACK fusions. XLA:CPU hands matmuls and the reductions and elementwise
ops around them to YNNPACK. On jax 0.12 that is slow for the small models of the cpu-scale grids
and fast for a 32k-vocabulary head (tokens/s with the fusions off ÷ XLA's default, bfloat16,
16 × 128 tokens, two runs of the bench; docs/performance.md):

  vocab 259:     d64-L2 1.04–1.13×, d128-L2 1.57–1.82×, d128-L4 1.38×, d256-L3 1.60–1.72×
  vocab 32,101:  d128-L2 0.68–0.95× (plain head), 0.57–0.74× (fused head)

On jax 0.10.2 the gain was smaller (1.0–1.3×) while the model ran its projections as [B, L, D]
contractions; with the row-major projections and written-out attention backward of `model.py`
the fusions-off step is the faster one there too (d128-L2 float32: 97 against 174 ms, a Zen 3
host, 2026-12-07). So `auto` turns them off on the CPU backend, for vocabularies below `MAX_VOCAB`,
on every JAX version, and leaves XLA's default elsewhere. This rounds differently from the
programs that made reference runs before 2026-12-07.
$STABILITY_CPU_YNN_FUSIONS = auto (default) | xla | off chooses for every run of the process; an
`xla_cpu_experimental_ynn_fusion_type` in $XLA_FLAGS is left to rule.
"""

import os

import jax

ENV = "STABILITY_CPU_YNN_FUSIONS"
CHOICES = ("auto", "xla", "off")
YNN_FUSIONS = "xla_cpu_experimental_ynn_fusion_type"
MAX_VOCAB = 2048  # a cut between the vocabularies measured: faster at 259, slower at 32,101


def choice() -> str:
  """$STABILITY_CPU_YNN_FUSIONS; ValueError when it is none of CHOICES (entry points ask at
  start, so a bad value stops them before any run)."""
  value = os.environ.get(ENV, "auto").strip().lower() or "auto"
  if value not in CHOICES:
    raise ValueError(f"${ENV}={value!r}: expected one of {', '.join(CHOICES)}")
  return value


def ynn_fusions_off(vocab_size: int, platform: str | None = None) -> bool:
  """Whether the training programs of a model with this vocabulary, compiled for `platform`
  (default: JAX's default backend), turn YNNPACK fusions off."""
  chosen = choice()
  platform = platform or jax.default_backend()
  if YNN_FUSIONS in os.environ.get("XLA_FLAGS", "") or platform != "cpu":
    return False
  if chosen != "auto":
    return chosen == "off"
  return vocab_size < MAX_VOCAB


def for_training(vocab_size: int, platform: str | None = None) -> dict[str, str]:
  """The `compiler_options` of the train, eval and init programs ({} for XLA's defaults)."""
  return {YNN_FUSIONS: ""} if ynn_fusions_off(vocab_size, platform) else {}
