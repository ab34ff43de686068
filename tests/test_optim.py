"""The optax chain against optax.adamw (coupled decay) and the paper's formula (independent)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from stability import losses, optim, parametrization

PEAK, MIN, WARMUP, TOTAL = 1e-2, 1e-5, 4, 20


def opt_cfg(**kw):
  return ml_collections.ConfigDict({**dict(
      peak_lr=PEAK, min_lr=MIN, warmup_steps=WARMUP, b1=0.9, b2=0.95, eps=1e-8, clip_norm=1.0,
      weight_decay=1e-4, weight_decay_mode="independent", decay_mask="all", lr_scale="none"), **kw})


def toy_params():
  r = np.random.default_rng(0)
  return {"block_0": {"mlp": {"wi": {"kernel": jnp.asarray(r.normal(size=(4, 8)), jnp.float32)}},
                      "ln_mlp": {"scale": jnp.ones(4)}},
          "embed": {"embedding": jnp.asarray(r.normal(size=(6, 4)), jnp.float32)}}


def grads_at(t, params):
  r = np.random.default_rng(100 + t)
  scale = 3.0 if t % 2 else 0.1  # alternate above and below the clipping threshold
  return jax.tree_util.tree_map(lambda p: jnp.asarray(scale * r.normal(size=p.shape), p.dtype),
                                params)


def run(tx, steps=8):
  params = toy_params()
  state = tx.init(params)
  for t in range(steps):
    updates, state = tx.update(grads_at(t, params), state, params)
    params = optax.apply_updates(params, updates)
  return params


def test_schedule_values():
  s = optim.lr_schedule(PEAK, MIN, WARMUP, TOTAL)
  assert float(s(0)) == 0.0                       # warm-up starts at 0
  assert float(s(WARMUP // 2)) == pytest.approx(PEAK / 2)
  assert float(s(WARMUP)) == pytest.approx(PEAK)  # peak at the end of warm-up
  mid = WARMUP + (TOTAL - WARMUP) // 2
  assert float(s(mid)) == pytest.approx((PEAK + MIN) / 2, rel=1e-5)  # cosine midpoint
  assert float(s(TOTAL)) == pytest.approx(MIN)    # absolute minimum at the end
  assert float(s(TOTAL + 100)) == pytest.approx(MIN)


def test_coupled_decay_equals_optax_adamw():
  cfg = opt_cfg(weight_decay=0.1, weight_decay_mode="coupled")
  ours = optim.make_optimizer(cfg, total_steps=TOTAL).tx
  schedule = optim.lr_schedule(PEAK, MIN, WARMUP, TOTAL)
  reference = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(schedule, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1))
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                         run(ours), run(reference))


def test_independent_decay_equals_paper_formula_step_by_step():
  """θ ← θ − s_t·(η·Δ + λ·θ), Δ = m̂/(sqrt(v̂)+ε) on clipped gradients; float64 numpy."""
  lam = 1e-2  # large enough that a wrong decay would show in a few steps
  tx = optim.make_optimizer(opt_cfg(weight_decay=lam), total_steps=TOTAL).tx
  schedule = optim.lr_schedule(PEAK, MIN, WARMUP, TOTAL)
  params = toy_params()
  state = tx.init(params)
  theta = jax.tree_util.tree_map(lambda p: np.asarray(p, np.float64), params)
  m = jax.tree_util.tree_map(np.zeros_like, theta)
  v = jax.tree_util.tree_map(np.zeros_like, theta)
  for t in range(10):
    g = grads_at(t, params)
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)

    g64 = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), g)
    norm = np.sqrt(sum(np.sum(x ** 2) for x in jax.tree_util.tree_leaves(g64)))
    g64 = jax.tree_util.tree_map(lambda x: x * min(1.0, 1.0 / norm), g64)
    m = jax.tree_util.tree_map(lambda m_, g_: 0.9 * m_ + 0.1 * g_, m, g64)
    v = jax.tree_util.tree_map(lambda v_, g_: 0.95 * v_ + 0.05 * g_ ** 2, v, g64)
    s_t = float(schedule(t)) / PEAK
    theta = jax.tree_util.tree_map(
        lambda th, m_, v_: th - s_t * (PEAK * (m_ / (1 - 0.9 ** (t + 1)))
                                       / (np.sqrt(v_ / (1 - 0.95 ** (t + 1))) + 1e-8) + lam * th),
        theta, m, v)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6),
                           params, theta)


def test_independent_decay_does_not_depend_on_peak_lr():
  """With zero gradients only decay acts: θ_T = θ_0·Π(1 − s_t·λ), the same for every η."""
  finals = []
  for peak in (1e-3, 1e-1):
    tx = optim.make_optimizer(opt_cfg(peak_lr=peak, weight_decay=0.05), total_steps=TOTAL).tx
    params = toy_params()
    state = tx.init(params)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    for _ in range(6):
      updates, state = tx.update(zeros, state, params)
      params = optax.apply_updates(params, updates)
    finals.append(params["embed"]["embedding"])
  np.testing.assert_allclose(finals[0], finals[1], rtol=1e-3)


@pytest.mark.parametrize("d_model,expected", [(512, 0.5), (1024, 0.25), (256, 1.0)])
def test_mup_multipliers(d_model, expected):
  params = {"block_0": {"attn": {n: {"kernel": 0} for n in ("wq", "wk", "wv", "wo")},
                        "mlp": {"wi": {"kernel": 0}, "wo": {"kernel": 0}},
                        "ln_attn": {"scale": 0}, "attn_q_norm": {"scale": 0}},
            "embed": {"embedding": 0}, "head": {"kernel": 0}, "ln_final": {"scale": 0}}
  mult = parametrization.lr_multipliers(params, "mup_simple", d_model)
  linear = [mult["block_0"]["attn"][n]["kernel"] for n in ("wq", "wk", "wv", "wo")]
  linear += [mult["block_0"]["mlp"]["wi"]["kernel"], mult["block_0"]["mlp"]["wo"]["kernel"],
             mult["head"]["kernel"]]
  assert linear == [expected] * 7
  assert mult["embed"]["embedding"] == mult["ln_final"]["scale"] == 1.0
  assert mult["block_0"]["ln_attn"]["scale"] == 1.0
  standard = parametrization.lr_multipliers(params, "standard", d_model)
  assert set(jax.tree_util.tree_leaves(standard)) == {1.0}


def test_mup_scales_only_the_adam_term_of_linear_layers():
  """Under μParam the kernel update is mult × the standard one (no decay); the rest unchanged."""
  def update(param_name):
    cfg = opt_cfg(weight_decay=0.0)
    tx = optim.make_optimizer(cfg, total_steps=TOTAL, parametrization_name=param_name,
                              d_model=1024).tx
    params = toy_params()
    state = tx.init(params)
    for t in range(WARMUP + 1):
      updates, state = tx.update(grads_at(t, params), state, params)
    return updates
  std, mup = update("standard"), update("mup_simple")
  np.testing.assert_allclose(mup["block_0"]["mlp"]["wi"]["kernel"],
                             0.25 * std["block_0"]["mlp"]["wi"]["kernel"], rtol=1e-6)
  np.testing.assert_allclose(mup["embed"]["embedding"], std["embed"]["embedding"], rtol=1e-6)


def test_param_rms_lr_scale():
  cfg = opt_cfg(weight_decay=0.0)
  base = optim.make_optimizer(cfg, total_steps=TOTAL)
  rel = optim.make_optimizer(opt_cfg(weight_decay=0.0, lr_scale="param_rms"), total_steps=TOTAL)
  params = toy_params()
  g = grads_at(0, params)
  u0, _ = base.tx.update(g, base.tx.init(params), params)
  u1, _ = rel.tx.update(g, rel.tx.init(params), params)
  for path in (("embed", "embedding"), ("block_0", "ln_mlp", "scale")):
    p = params[path[0]][path[1]] if len(path) == 2 else params[path[0]][path[1]][path[2]]
    a = u0[path[0]][path[1]] if len(path) == 2 else u0[path[0]][path[1]][path[2]]
    b = u1[path[0]][path[1]] if len(path) == 2 else u1[path[0]][path[1]][path[2]]
    factor = max(float(np.sqrt(np.mean(np.square(p)))), 1e-3)
    np.testing.assert_allclose(b, factor * a, rtol=1e-6)


def test_z_loss_equals_formula():
  r = np.random.default_rng(0)
  logits = r.normal(size=(2, 5, 11)) * 4 - 3
  targets = r.integers(0, 11, size=(2, 5))
  ce, z, stats = losses.cross_entropy_and_z_loss(jnp.asarray(logits, jnp.float32),
                                                 jnp.asarray(targets), 1e-4)
  log_z = np.log(np.exp(logits).sum(-1))
  expected_ce = np.mean(log_z - np.take_along_axis(logits, targets[..., None], -1)[..., 0])
  assert float(ce) == pytest.approx(expected_ce, rel=1e-6)
  assert float(z) == pytest.approx(1e-4 * np.mean(log_z ** 2), rel=1e-5)
  assert float(stats["output_logit/log_z_mean"]) == pytest.approx(log_z.mean(), rel=1e-6)
  assert float(stats["output_logit/mean"]) == pytest.approx(logits.mean(), rel=1e-5)
