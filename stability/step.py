"""The train state and the pure train / eval steps (jitted and sharded by `train.py`)."""

import functools
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from stability import diagnostics
from stability import fused_head
from stability import losses
from stability.model import Decoder
from stability.optim import Optimizer


@flax.struct.dataclass
class TrainState:
  step: jax.Array             # int32: updates applied so far
  params: Any                 # float32
  opt_state: Any              # (clip, Adam direction, apply) states
  first_nonfinite: jax.Array  # int32: first step whose loss, gradient or new params were not finite; -1


def init_params(model: Decoder, rng: jax.Array, seq_len: int):
  """Parameters boxed with their logical axis names (for `nn.get_partition_spec`)."""
  return model.init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]


def init_state(rng: jax.Array, *, model: Decoder, optimizer: Optimizer, seq_len: int) -> TrainState:
  params = nn.unbox(init_params(model, rng, seq_len))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.tx.init(params),
                    first_nonfinite=jnp.full((), -1, jnp.int32))


def _loss_terms(params, inputs_BxL, targets_BxL, *, model: Decoder, z_loss_coef: float,
                mutable):
  """(ce + z_loss, (ce, z_loss, output-logit stats)), and the model's sown variables: logits
  then the loss (`head_impl=plain`), or hidden states into the fused head and loss (`fused`)."""
  cfg = model.cfg
  if cfg.head_impl == "fused":
    h_BxLxD, variables = model.apply({"params": params}, inputs_BxL, hidden_only=True,
                                     mutable=mutable)
    c = fused_head.chunk_len(*targets_BxL.shape, cfg.head_chunk_tokens)
    out = fused_head.head_loss(h_BxLxD, params["head"]["kernel"], targets_BxL, z_loss_coef,
                               cfg.dtype, c)
    return out, variables
  logits_BxLxV, variables = model.apply({"params": params}, inputs_BxL, mutable=mutable)
  ce, z_loss, stats = losses.cross_entropy_and_z_loss(logits_BxLxV, targets_BxL, z_loss_coef)
  return (ce + z_loss, (ce, z_loss, stats)), variables


def _forward(params, tokens_BxL1, *, model: Decoder, z_loss_coef: float, diagnose: bool):
  inputs_BxL, targets_BxL = tokens_BxL1[:, :-1], tokens_BxL1[:, 1:]
  mutable = ["diagnostics"] if diagnose else []
  (total, (ce, z_loss, logit_stats)), variables = _loss_terms(
      params, inputs_BxL, targets_BxL, model=model, z_loss_coef=z_loss_coef, mutable=mutable)
  sown = diagnostics.flatten_sown(variables.get("diagnostics", {})) if diagnose else {}
  return total, (ce, z_loss, {**logit_stats, **sown})


def _loss_and_grads(params, tokens_BxL1, grad_accum: int, **forward_kw):
  """Mean loss terms and gradients over `grad_accum` microbatches (a scan when > 1)."""
  grad_fn = jax.value_and_grad(functools.partial(_forward, **forward_kw), has_aux=True)
  if grad_accum == 1:
    (_, (ce, z_loss, stats)), grads = grad_fn(params, tokens_BxL1)
    return ce, z_loss, stats, grads

  # Strided microbatches (rows i, i+A, i+2A, ...): each one stays spread over every data-parallel
  # device; contiguous slices would sit on a few devices and be gathered.
  micro_AxBxL1 = tokens_BxL1.reshape(-1, grad_accum, tokens_BxL1.shape[-1]).swapaxes(0, 1)

  def accumulate(grad_sum, micro_BxL1):
    (_, (ce, z_loss, stats)), grads = grad_fn(params, micro_BxL1)
    return jax.tree_util.tree_map(jnp.add, grad_sum, grads), (ce, z_loss, stats)

  zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
  grad_sum, (ce_A, z_A, stats_A) = jax.lax.scan(accumulate, zeros, micro_AxBxL1)
  grads = jax.tree_util.tree_map(lambda g: g / grad_accum, grad_sum)
  stats = {k: diagnostics.reduce_over_microbatches(k, v) for k, v in stats_A.items()}
  return jnp.mean(ce_A), jnp.mean(z_A), stats, grads


def train_step(state: TrainState, tokens_BxL1: jax.Array, *, model: Decoder, optimizer: Optimizer,
               z_loss_coef: float, grad_accum: int = 1, diagnose: bool = False):
  """One update. With `diagnose`, also every diagnostic of the paper (log steps only)."""
  ce, z_loss, stats, grads = _loss_and_grads(
      state.params, tokens_BxL1, grad_accum, model=model, z_loss_coef=z_loss_coef,
      diagnose=diagnose)
  clip_state, direction_state, apply_state = state.opt_state
  clipped, clip_state = optimizer.clip.update(grads, clip_state, state.params)
  delta, direction_state = optimizer.direction.update(clipped, direction_state, state.params)
  updates, apply_state = optimizer.apply.update(delta, apply_state, state.params)
  params = optax.apply_updates(state.params, updates)

  grad_norm = diagnostics.global_norm(grads)
  finite = jnp.isfinite(ce) & jnp.isfinite(grad_norm) & jnp.isfinite(diagnostics.global_norm(params))
  first_nonfinite = jnp.where((state.first_nonfinite < 0) & ~finite, state.step,
                              state.first_nonfinite)
  metrics = {"train_loss": ce, "z_loss": z_loss, "lr": optimizer.schedule(state.step),
             "grad_norm": grad_norm, "first_nonfinite": first_nonfinite, **stats}
  if diagnose:
    metrics.update(diagnostics.per_tensor_rms("grad_rms", grads))
    metrics.update(diagnostics.per_tensor_rms("grad_rms_clipped", clipped))
    metrics.update(diagnostics.per_tensor_rms("update_rms", delta))
    metrics.update(diagnostics.per_tensor_rms("param_rms", state.params))
  new_state = TrainState(step=state.step + 1, params=params,
                         opt_state=(clip_state, direction_state, apply_state),
                         first_nonfinite=first_nonfinite)
  return new_state, metrics


def eval_step(params, tokens_BxL1: jax.Array, *, model: Decoder) -> jax.Array:
  """Mean next-token cross-entropy of one eval batch (z-loss is not part of the reported loss)."""
  (_, (ce, _, _)), _ = _loss_terms(params, tokens_BxL1[:, :-1], tokens_BxL1[:, 1:], model=model,
                                   z_loss_coef=0.0, mutable=[])
  return ce


def params_finite(params) -> jax.Array:
  """Whether every parameter is finite (bool scalar)."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree_util.tree_leaves(params)]))
