"""The optax chain of the paper (docs/paper_notes.md#optimizer-and-schedule), in three parts
so that the train step can log what the paper plots between them:

  clip       global-norm clipping of the raw gradient g                     -> g_clip
  direction  Adam(β1, β2, ε): the unscaled update Δ = m̂ / (sqrt(v̂) + ε)   -> Δ (Figs 11-13)
  apply      Δ × per-parameter LR multipliers (μParam, Fig 8) [× max(RMS(p), 1e-3), Fig E.14]
             + decay·θ, then × −schedule(t)

Weight decay is the same optax transform in both modes, with the coefficient chosen so that:
  independent  θ ← θ − s_t·(η·m·Δ + λ·θ)     coefficient λ/η   (the paper's default, λ = 1e-4)
  coupled      θ ← θ − s_t·η·(m·Δ + λ·θ)     coefficient λ     (optax/PyTorch AdamW, λ = 0.1)
where schedule(t) = s_t·η, s_t ∈ [0, 1] the warm-up + cosine shape and η the peak LR.
"""

import dataclasses
from typing import Callable

import jax
import optax

from stability import parametrization


def lr_schedule(peak_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0 to `peak_lr`, then cosine decay to the absolute `min_lr` at the end."""
  cosine = optax.cosine_decay_schedule(
      init_value=peak_lr, decay_steps=max(total_steps - warmup_steps, 1), alpha=min_lr / peak_lr)
  if warmup_steps <= 0:
    return cosine
  warmup = optax.linear_schedule(0.0, peak_lr, warmup_steps)
  return optax.join_schedules([warmup, cosine], [warmup_steps])


def scale_by_multipliers(multiplier_of: Callable[[str], float]) -> optax.GradientTransformation:
  """Multiplies each update by a constant chosen from its parameter path (stateless)."""

  def update_fn(updates, state, params=None):
    del params
    scaled = jax.tree_util.tree_map_with_path(
        lambda p, u: u * multiplier_of(parametrization.path_name(p)), updates)
    return scaled, state

  return optax.GradientTransformation(lambda _: optax.EmptyState(), update_fn)


@dataclasses.dataclass(frozen=True)
class Optimizer:
  clip: optax.GradientTransformation
  direction: optax.GradientTransformation
  apply: optax.GradientTransformation
  schedule: optax.Schedule

  @property
  def tx(self) -> optax.GradientTransformation:
    """The whole chain as one transform (same state layout as (clip, direction, apply))."""
    return optax.chain(self.clip, self.direction, self.apply)


# Scalar hyper-parameters that may be traced arrays (one value per member of a batched sweep).
SCALAR_HYPERS = ("peak_lr", "min_lr", "b1", "b2", "eps", "clip_norm", "weight_decay")


def optimizer_builder(opt_cfg, *, total_steps: int, parametrization_name: str = "standard",
                      d_model: int = 256, mup_base_width: int = 256
                      ) -> Callable[[dict | None], Optimizer]:
  """Reads `config.opt` once; returns `build(hypers)`, the chain with SCALAR_HYPERS overridden
  by `hypers` (e.g. tracers, one member's values). What is not a scalar hyper-parameter (the
  warm-up, decay mode and mask, clipping on or off) is fixed here: it shapes the program."""
  defaults = {name: opt_cfg[name] for name in SCALAR_HYPERS}
  warmup_steps, decay_mode = opt_cfg.warmup_steps, opt_cfg.weight_decay_mode
  relative, clipped = opt_cfg.lr_scale == "param_rms", opt_cfg.clip_norm > 0
  decay_which = opt_cfg.decay_mask

  def multiplier_of(name: str) -> float:
    return parametrization.lr_multiplier(name, parametrization_name, d_model, mup_base_width)

  def build(hypers: dict | None = None) -> Optimizer:
    h = {**defaults, **(hypers or {})}
    schedule = lr_schedule(h["peak_lr"], h["min_lr"], warmup_steps, total_steps)
    decay_coef = h["weight_decay"]
    if decay_mode == "independent":
      decay_coef = decay_coef / h["peak_lr"]
    apply = [scale_by_multipliers(multiplier_of)]
    if relative:
      apply.append(parametrization.scale_by_param_rms())
    # Always in the chain (λ = 0 adds exactly 0): the state layout must not depend on the values,
    # which may differ between the members of a batched sweep.
    apply.append(optax.add_decayed_weights(
        decay_coef, mask=lambda p: parametrization.decay_mask(p, decay_which)))
    apply.append(optax.scale_by_learning_rate(schedule))
    return Optimizer(
        clip=optax.clip_by_global_norm(h["clip_norm"]) if clipped else optax.identity(),
        direction=optax.scale_by_adam(b1=h["b1"], b2=h["b2"], eps=h["eps"]),
        apply=optax.chain(*apply),
        schedule=schedule,
    )

  return build


def make_optimizer(opt_cfg, *, total_steps: int, hypers: dict | None = None,
                   **parametrization_args) -> Optimizer:
  """The chain of `config.opt` (`hypers` overriding SCALAR_HYPERS); see `optimizer_builder`."""
  return optimizer_builder(opt_cfg, total_steps=total_steps, **parametrization_args)(hypers)
