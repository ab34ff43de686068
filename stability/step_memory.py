"""How many microbatches a train step needs to fit in one accelerator's memory.

A rule fitted to the peaks measured on an H100 (bfloat16, cuDNN attention, no remat, vocab
32,101, 2026-11-27; docs/performance.md). A step holds about:
- 46 bytes of activations per token per unit of d_model × layers;
- 16 bytes per parameter (float32 weights, gradients and two Adam moments);
- 6 bytes per logit of one chunk of the fused head, 8 per logit of the plain head (all tokens).
It gives 7.5, 21.0, 30.8 and 42.9 GiB where 7.7 (d256-L3), 21.0 (d512-L6, both in one
microbatch), 31.0 (d768-L12, two) and 43.0 GiB (d1024-L24, four) were measured with the fused
head, and 9.2 GiB where the plain head measured 9.4 (d256-L3, four).

Not measured, and estimated: attention without a kernel (`attention_impl=explicit`, or squared-ReLU
and forced attention) keeps its B·H·L² float32 scores per layer for the backward pass, about
10 bytes each (seen on CPU); a log step through a kernel forms them once more, outside the
gradient, about 12 bytes each for one layer at a time. For other sizes the rule is an estimate,
and the budget leaves room for its error.
"""

from stability import config_schema
from stability import flops

ACTIVATION_BYTES = 46  # per token per unit of d_model × layers
STATE_BYTES = 16  # per parameter
FUSED_LOGIT_BYTES = 6  # per logit of one head chunk (tokens per chunk × vocab)
PLAIN_LOGIT_BYTES = 8  # per logit of the plain head (tokens × vocab)
STORED_SCORE_BYTES = 10  # per attention score per layer, attention without a kernel
LOG_STEP_SCORE_BYTES = 12  # per attention score of one layer, a log step through a kernel
DEFAULT_BUDGET = 48 * 2 ** 30  # of an 80 GB device: room for the rule's error
# On a CPU the bound is the cache: a step whose activations (the estimate less the state) are
# over about 40 MiB ran slower than the same step in microbatches under it (2-core Zen 4,
# float32, batch 16×128, 2026-12-07: d128-L4, 69 MiB, 133-154 ms in one microbatch and 102-105
# in two; d192-L4, 101 MiB, 226 / 209 / 192 ms in 1 / 2 / 4; d128-L2, 37 MiB, the same in 1 or 2).
CPU_CACHE_BUDGET = 40 * 2 ** 20


def step_bytes(model_cfg, tokens: int, vocab_size: int, log_step: bool = False) -> float:
  """Peak device bytes of one microbatch of `tokens` tokens, no remat; with `log_step`, of the
  step that also computes the diagnostics. `model_cfg` is `config.model`."""
  d, layers = model_cfg.d_model, model_cfg.num_layers
  params = flops.non_embedding_params(d, layers) + 2 * vocab_size * d
  if config_schema.resolve_head_impl(model_cfg.head_impl, vocab_size) == "fused":
    logits = FUSED_LOGIT_BYTES * min(model_cfg.head_chunk_tokens, tokens) * vocab_size
  else:
    logits = PLAIN_LOGIT_BYTES * tokens * vocab_size
  scores = tokens * model_cfg.num_heads * model_cfg.seq_len  # B·H·L², per layer
  if model_cfg.attention != "softmax" or model_cfg.attention_impl == "explicit":
    attention = STORED_SCORE_BYTES * scores * layers
  else:
    attention = LOG_STEP_SCORE_BYTES * scores if log_step else 0
  return ACTIVATION_BYTES * tokens * d * layers + STATE_BYTES * params + logits + attention


def microbatches_to_fit(model_cfg, batch: int, vocab_size: int,
                        budget: float = DEFAULT_BUDGET) -> int:
  """The fewest microbatches (a divisor of `batch`) whose steps, the log step too, fit in
  `budget` bytes on one device; `batch` (one row each) if none does. Where even the parameters
  and optimizer state alone do not fit, 1: the state must be sharded, and microbatches cannot
  help."""
  if step_bytes(model_cfg, 0, vocab_size) > budget:
    return 1
  for m in range(1, batch + 1):
    if batch % m == 0 and step_bytes(model_cfg, batch // m * model_cfg.seq_len, vocab_size,
                                     log_step=True) <= budget:
      return m
  return batch


def microbatches_for_cache(model_cfg, batch: int, vocab_size: int,
                           budget: float = CPU_CACHE_BUDGET) -> int:
  """The fewest microbatches (a divisor of `batch`) whose activations, the log step's too, fit
  in `budget` bytes of cache; `batch` if none does."""
  state = step_bytes(model_cfg, 0, vocab_size)
  for m in range(1, batch + 1):
    tokens = batch // m * model_cfg.seq_len
    if batch % m == 0 and step_bytes(model_cfg, tokens, vocab_size, log_step=True) - state <= budget:
      return m
  return batch
