"""Next-token cross-entropy plus z-loss (docs/paper_notes.md#optimizer-and-schedule), in float32.

z-loss (PaLM) adds coef · log²Z per token, Z = Σ_v exp(logit_v); it keeps log Z near 0 and
so stops the output logits from drifting (Figs 3-4). The reported loss is the cross-entropy.
"""

import jax
import jax.numpy as jnp


def cross_entropy_and_z_loss(
    logits_BxLxV: jax.Array,
    targets_BxL: jax.Array,
    z_loss_coef: float,
    weights_BxL: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """Returns (mean CE, mean coef·log²Z, output-logit statistics), averaged over weighted tokens."""
  logits_BxLxV = logits_BxLxV.astype(jnp.float32)
  if weights_BxL is None:
    weights_BxL = jnp.ones(targets_BxL.shape, jnp.float32)
  weights_BxL = weights_BxL.astype(jnp.float32)
  denom = jnp.maximum(jnp.sum(weights_BxL), 1.0)

  log_z_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
  target_logit_BxL = jnp.take_along_axis(logits_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
  ce = jnp.sum((log_z_BxL - target_logit_BxL) * weights_BxL) / denom
  z_loss = z_loss_coef * jnp.sum(jnp.square(log_z_BxL) * weights_BxL) / denom

  stats = {
      "output_logit/mean": jnp.mean(logits_BxLxV),
      "output_logit/max": jnp.max(logits_BxLxV),
      "output_logit/log_z_mean": jnp.sum(log_z_BxL * weights_BxL) / denom,
  }
  return ce, z_loss, stats
