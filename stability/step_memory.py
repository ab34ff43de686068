"""How many microbatches a train step needs to fit in an accelerator's memory.

A rule fitted to the peaks measured on an H100 (bfloat16, fused head, cuDNN attention, no remat,
vocab 32,101, 2026-11-27; docs/performance.md): a step holds about 46 bytes of activations per
token per unit of d_model × layers, 16 bytes per parameter (float32 weights, gradients and two
Adam moments), and 6 bytes per logit of one head chunk. It gives 7.5, 21.0, 30.8 and 42.9 GiB
where 7.7 (d256-L3), 21.0 (d512-L6, both in one microbatch), 31.0 (d768-L12, two) and 43.0 GiB
(d1024-L24, four) were measured. For other sizes it is an estimate, and the budget leaves room
for its error.
"""

from stability import flops

ACTIVATION_BYTES = 46  # per token per unit of d_model × layers
STATE_BYTES = 16  # per parameter
LOGIT_BYTES = 6  # per logit of one head chunk (tokens per chunk × vocab)
DEFAULT_BUDGET = 48 * 2 ** 30  # of an 80 GB device: room for the rule's error


def step_bytes(d_model: int, num_layers: int, tokens: int, vocab_size: int,
               head_chunk_tokens: int) -> float:
  """Peak device bytes of one microbatch of `tokens` tokens (fused head, no remat)."""
  params = flops.non_embedding_params(d_model, num_layers) + 2 * vocab_size * d_model
  return (ACTIVATION_BYTES * tokens * d_model * num_layers + STATE_BYTES * params
          + LOGIT_BYTES * min(head_chunk_tokens, tokens) * vocab_size)


def microbatches_to_fit(model_cfg, batch: int, vocab_size: int,
                        budget: float = DEFAULT_BUDGET) -> int:
  """The fewest microbatches (a divisor of `batch`) whose step fits in `budget` bytes on one
  device; 1 where not even one row fits, since then the state itself must be sharded."""
  for m in range(1, batch + 1):
    tokens = batch // m * model_cfg.seq_len
    if batch % m == 0 and step_bytes(model_cfg.d_model, model_cfg.num_layers, tokens,
                                     vocab_size, model_cfg.head_chunk_tokens) <= budget:
      return m
  return 1
