"""The output head and its loss, fused: CE + z-loss without ever holding the [tokens × V] logits.

The plain path (`model.head_impl=plain`) computes float32 logits [B, L, V] and then the loss
(`losses.py`): at the paper's vocabulary that tensor is the step's largest, read and written
several times. Here the sequence is cut into chunks of positions, and for each chunk the logits
exist only inside one iteration of a `lax.scan`:

  forward   logits = h · W (operands in the model dtype, float32 accumulation), log Z by a
            stable logsumexp, CE and z-loss sums, and the output-logit statistics;
  gradient  computed in the same pass (the loss is a sum over chunks, so each chunk's share is
            final): dlogits = (softmax − onehot + 2·coef·log Z·softmax) / N, cast to the model
            dtype, then dh = dlogits · Wᵀ and dW += hᵀ · dlogits in float32.

`head_loss` is differentiable only in its first output, the total `ce + z_loss` that the train
step minimises; the CE, z-loss and statistics it also returns carry no gradient. Statistics equal
the plain path's: log Z mean from the per-token logsumexp, the max logit from the running max, and
the mean logit exactly as h · mean_v(W).
"""

import functools

import jax
import jax.numpy as jnp

from stability import model as model_lib


def chunk_len(batch: int, length: int, tokens_per_chunk: int) -> int:
  """The largest divisor of `length` whose chunk (batch × positions) holds ≤ tokens_per_chunk
  tokens; at least 1 position."""
  return model_lib.largest_divisor(length, tokens_per_chunk // batch)


def _chunks(x_BxL, c: int):
  """[B, L, ...] -> [L/c, B·c, ...]: chunks of positions, the tokens of each flattened batch
  first (so each chunk stays split over the batch's devices)."""
  b, length = x_BxL.shape[:2]
  chunks = jnp.swapaxes(x_BxL.reshape(b, length // c, c, *x_BxL.shape[2:]), 0, 1)
  return chunks.reshape(length // c, b * c, *x_BxL.shape[2:])


def _chunk_logits(h_NxD, w_DxV, dtype):
  """float32 logits of one chunk; `w_DxV` is already in `dtype`."""
  return jnp.einsum("nd,dv->nv", h_NxD.astype(dtype), w_DxV, preferred_element_type=jnp.float32)


def _chunk_sums(logits_NxV, targets_N):
  """(log Z per token, (CE sum, log²Z sum, log Z sum, max logit)) of one chunk of N tokens."""
  max_N = jnp.max(logits_NxV, axis=-1)
  log_z_N = max_N + jnp.log(jnp.sum(jnp.exp(logits_NxV - max_N[:, None]), axis=-1))
  target_N = jnp.take_along_axis(logits_NxV, targets_N[:, None], axis=-1)[:, 0]
  sums = (jnp.sum(log_z_N - target_N), jnp.sum(jnp.square(log_z_N)), jnp.sum(log_z_N),
          jnp.max(max_N))
  return log_z_N, sums


def _outputs(sums, n: int, z_loss_coef: float, mean_logit):
  ce_sum, z_sum, log_z_sum, max_logit = sums
  ce, z_loss = ce_sum / n, z_loss_coef * z_sum / n
  stats = {"output_logit/mean": mean_logit, "output_logit/max": max_logit,
           "output_logit/log_z_mean": log_z_sum / n}
  return ce + z_loss, (ce, z_loss, stats)


def _mean_logit(h_BxLxD, w_DxV, dtype):
  """mean over tokens and vocabulary of h · W = mean over tokens of h · mean_v(W)."""
  w_mean_D = jnp.mean(w_DxV.astype(dtype).astype(jnp.float32), axis=1)
  return jnp.mean(h_BxLxD.astype(dtype).astype(jnp.float32) @ w_mean_D)


def _zero_sums():
  zero = jnp.zeros((), jnp.float32)
  return zero, zero, zero, jnp.full((), -jnp.inf, jnp.float32)


def _add(sums, new):
  return sums[0] + new[0], sums[1] + new[1], sums[2] + new[2], jnp.maximum(sums[3], new[3])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def head_loss(h_BxLxD, w_DxV, targets_BxL, z_loss_coef: float, dtype, c: int):
  """(ce + z_loss, (ce, z_loss, output-logit stats)) of the head W on hidden states h, in chunks
  of `c` positions (`chunk_len`)."""
  w_dtype_DxV = w_DxV.astype(dtype)

  def body(sums, chunk):
    h_NxD, targets_N = chunk
    _, new = _chunk_sums(_chunk_logits(h_NxD, w_dtype_DxV, dtype), targets_N)
    return _add(sums, new), None

  sums, _ = jax.lax.scan(body, _zero_sums(), (_chunks(h_BxLxD, c), _chunks(targets_BxL, c)))
  return _outputs(sums, targets_BxL.size, z_loss_coef, _mean_logit(h_BxLxD, w_DxV, dtype))


def _head_loss_fwd(h_BxLxD, w_DxV, targets_BxL, z_loss_coef, dtype, c):
  n = targets_BxL.size
  w_dtype_DxV = w_DxV.astype(dtype)

  def body(carry, chunk):
    sums, dw_DxV = carry
    h_NxD, targets_N = chunk
    logits_NxV = _chunk_logits(h_NxD, w_dtype_DxV, dtype)
    log_z_N, new = _chunk_sums(logits_NxV, targets_N)
    probs_NxV = jnp.exp(logits_NxV - log_z_N[:, None])
    onehot_NxV = targets_N[:, None] == jnp.arange(logits_NxV.shape[-1])
    scale_N = (1.0 + 2.0 * z_loss_coef * log_z_N) / n
    dlogits_NxV = (probs_NxV * scale_N[:, None] - jnp.where(onehot_NxV, 1.0 / n, 0.0)).astype(dtype)
    dh_NxD = jnp.einsum("nv,dv->nd", dlogits_NxV, w_dtype_DxV, preferred_element_type=jnp.float32)
    dw_DxV = dw_DxV + jnp.einsum("nd,nv->dv", h_NxD.astype(dtype), dlogits_NxV,
                                 preferred_element_type=jnp.float32)
    return (_add(sums, new), dw_DxV), dh_NxD

  init = (_zero_sums(), jnp.zeros(w_DxV.shape, jnp.float32))
  (sums, dw_DxV), dh_chunks = jax.lax.scan(
      body, init, (_chunks(h_BxLxD, c), _chunks(targets_BxL, c)))
  b, length, d = h_BxLxD.shape
  dh_BxLxD = jnp.swapaxes(dh_chunks.reshape(length // c, b, c, d), 0, 1).reshape(b, length, d)
  out = _outputs(sums, n, z_loss_coef, _mean_logit(h_BxLxD, w_DxV, dtype))
  residuals = (dh_BxLxD.astype(h_BxLxD.dtype), dw_DxV.astype(w_DxV.dtype), targets_BxL)
  return out, residuals


def _head_loss_bwd(z_loss_coef, dtype, c, residuals, cotangents):
  """Only the total's cotangent counts: CE, z-loss and statistics are reported, not minimised."""
  del z_loss_coef, dtype, c
  dh_BxLxD, dw_DxV, targets_BxL = residuals
  g_total = cotangents[0]
  targets_zero = jnp.zeros(targets_BxL.shape, jax.dtypes.float0)
  return g_total * dh_BxLxD, g_total * dw_DxV, targets_zero


head_loss.defvjp(_head_loss_fwd, _head_loss_bwd)
