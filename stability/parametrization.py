"""Standard parametrization and μParam variants (paper §3.2.4, Fig 8, E.4-E.6).

The model applies the init-time parts itself (head init scale, 1/d_head attention scale,
zero query init; see `model.py`); this module gives the optimizer its per-parameter LR
multipliers:

  standard           1 everywhere
  mup_simple         every linear layer (Q, K, V, attention out, MLP in/out, head): LR ×
                     base_fan_in / fan_in, with base_fan_in the fan-in of the same layer in the
                     width-`mup_base_width` model. Every fan-in here is proportional to d_model,
                     so the multiplier is mup_base_width / d_model. Embeddings and LayerNorm
                     scales keep multiplier 1.
  mup_intermediate   mup_simple + head init std sqrt(base_fan_in)/fan_in
  mup_full           mup_intermediate + 1/d_head attention scale + zero-initialised query
"""

import jax
import jax.numpy as jnp
import optax

LINEAR_LAYERS = ("wq", "wk", "wv", "wo", "wi", "head")


def path_name(path) -> str:
  """A pytree key path -> 'block_0/mlp/wi/kernel'."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def is_linear_kernel(name: str) -> bool:
  parts = name.split("/")
  return parts[-1] == "kernel" and len(parts) >= 2 and parts[-2] in LINEAR_LAYERS


def lr_multiplier(name: str, parametrization: str, d_model: int, base_width: int = 256) -> float:
  """The LR multiplier of the parameter at path `name`."""
  if parametrization.startswith("mup") and is_linear_kernel(name):
    return base_width / d_model
  return 1.0


def lr_multipliers(params, parametrization: str, d_model: int, base_width: int = 256):
  """A pytree like `params` of float LR multipliers."""
  return jax.tree_util.tree_map_with_path(
      lambda p, _: lr_multiplier(path_name(p), parametrization, d_model, base_width), params)


def decay_mask(params, which: str):
  """Which parameters weight decay touches: 'all' (NanoDO's default) or only 'kernels'."""
  if which == "all":
    return jax.tree_util.tree_map(lambda _: True, params)
  return jax.tree_util.tree_map_with_path(lambda p, _: is_linear_kernel(path_name(p)), params)


def scale_by_param_rms(min_scale: float = 1e-3) -> optax.GradientTransformation:
  """Adafactor-style relative step (Fig E.14): update × max(RMS(p), min_scale), per tensor."""

  def update_fn(updates, state, params):
    scaled = jax.tree_util.tree_map(
        lambda u, p: u * jnp.maximum(jnp.sqrt(jnp.mean(jnp.square(p))), min_scale),
        updates, params)
    return scaled, state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)
