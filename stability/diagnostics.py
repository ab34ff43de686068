"""What the paper plots, as flat `{name: scalar}` dicts with stable names (analysis reads them).

  attn_logit_max/block_{i}   max pre-softmax logit over valid causal entries (Figs 2, 9, E.2)
  q_norm/block_{i}, k_norm/block_{i}, qk_cos/block_{i}   query / key norms and cosine (Fig E.1)
  block_out_rms/block_{i}    RMS of each block's output, the residual stream (Fig C.1)
  output_logit/{mean,max,log_z_mean}                    output-logit drift (Fig 4)
  grad_rms/<path>, grad_rms_clipped/<path>              raw and clipped gradients (Figs 11, E.12)
  update_rms/<path>          the unscaled Adam direction Δ, without decay (Fig 13, E.13)
  param_rms/<path>           parameters
and the global versions `grad_rms`, `grad_rms_clipped`, `update_rms`, `param_rms`, `grad_norm`.
Paths look like `block_0/mlp/wi/kernel`.
"""

import jax
import jax.numpy as jnp

from stability.parametrization import path_name

_SOWN_NAMES = {
    "attn_logit_max": "attn_logit_max",
    "query_norm": "q_norm",
    "key_norm": "k_norm",
    "qk_cos": "qk_cos",
    "block_out_rms": "block_out_rms",
}


def rms(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  return jnp.sqrt(jnp.mean(jnp.square(x)))


def global_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                      for x in jax.tree_util.tree_leaves(tree)))


def global_rms(tree) -> jax.Array:
  count = sum(x.size for x in jax.tree_util.tree_leaves(tree))
  return global_norm(tree) / jnp.sqrt(float(count))


def per_tensor_rms(prefix: str, tree) -> dict[str, jax.Array]:
  """`{prefix/path: RMS}` for every leaf, plus `{prefix: global RMS}`."""
  out = {f"{prefix}/{path_name(p)}": rms(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  out[prefix] = global_rms(tree)
  return out


def flatten_sown(diagnostics) -> dict[str, jax.Array]:
  """The model's `diagnostics` collection -> `{'attn_logit_max/block_0': x, ...}`."""
  out = {}
  for path, value in jax.tree_util.tree_leaves_with_path(diagnostics):
    keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
    block = next(k for k in keys if k.startswith("block_"))
    sown = next(k for k in keys if k in _SOWN_NAMES)
    out[f"{_SOWN_NAMES[sown]}/{block}"] = value
  return out


def reduce_over_microbatches(name: str, values: jax.Array) -> jax.Array:
  """Stacked per-microbatch diagnostics -> one value: max for maxima, mean otherwise."""
  return jnp.max(values) if "max" in name else jnp.mean(values)
