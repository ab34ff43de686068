"""The fused head + loss (`model.head_impl=fused`) equals the plain path: logits, then the loss.

float32: the same sums in other orders (chunks, and the mean logit as h · mean_v(W)). Seen:
losses 2e-7 relative, gradients 4e-7 of their largest entry, the mean logit 8e-6 (a mean near
zero). Bounds: rtol 1e-5 for losses and statistics, rtol 1e-4 (atol 1e-7) for gradients, whose
small entries carry more relative error. bfloat16: matmul operands are rounded in both paths,
dlogits only in the fused one; seen 4e-3 of the largest gradient entry; bound 2e-2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from stability import fused_head
from stability import losses
from stability import run as run_lib
from stability import step as step_lib
from stability.model import Decoder, ModelConfig

V = 131  # prime: no chunk of the vocabulary lines up with anything


def hidden_and_head(dtype, b=4, length=12, d=32, seed=0):
  rng = np.random.default_rng(seed)
  h_BxLxD = jnp.asarray(rng.normal(size=(b, length, d)), jnp.float32)
  w_DxV = jnp.asarray(rng.normal(size=(d, V)) * 0.5, jnp.float32)
  targets_BxL = jnp.asarray(rng.integers(0, V, (b, length)), jnp.int32)
  return h_BxLxD, w_DxV, targets_BxL


def plain_loss(h_BxLxD, w_DxV, targets_BxL, coef, dtype):
  logits = jnp.einsum("bld,dv->blv", h_BxLxD.astype(dtype), w_DxV.astype(dtype),
                      preferred_element_type=jnp.float32)
  ce, z_loss, stats = losses.cross_entropy_and_z_loss(logits, targets_BxL, coef)
  return ce + z_loss, (ce, z_loss, stats)


def both(dtype, coef=1e-2, c=3):
  h, w, t = hidden_and_head(dtype)
  grad = lambda f: jax.value_and_grad(f, argnums=(0, 1), has_aux=True)
  plain = grad(lambda h, w: plain_loss(h, w, t, coef, dtype))(h, w)
  fused = grad(lambda h, w: fused_head.head_loss(h, w, t, coef, dtype, c))(h, w)
  return plain, fused


def assert_same(plain, fused, rtol, grad_rtol, atol=1e-7):
  ((p_total, (p_ce, p_z, p_stats)), p_grads) = plain
  ((f_total, (f_ce, f_z, f_stats)), f_grads) = fused
  np.testing.assert_allclose([f_total, f_ce, f_z], [p_total, p_ce, p_z], rtol=rtol)
  for key in p_stats:
    np.testing.assert_allclose(f_stats[key], p_stats[key], rtol=rtol, atol=atol, err_msg=key)
  for p_g, f_g, name in zip(p_grads, f_grads, ("dh", "dW")):
    np.testing.assert_allclose(f_g, p_g, rtol=grad_rtol, atol=atol, err_msg=name)


def test_fused_equals_plain_in_float32():
  plain, fused = both(jnp.float32)
  assert_same(plain, fused, rtol=1e-5, grad_rtol=1e-4)
  assert float(plain[0][1][1]) > 1e-3  # the z-loss term is large enough to matter


def test_fused_is_close_to_plain_in_bfloat16():
  plain, fused = both(jnp.bfloat16)
  assert_same(plain, fused, rtol=2e-2, grad_rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("c", [1, 4, 12])
def test_chunking_does_not_change_the_result(c):
  h, w, t = hidden_and_head(jnp.float32)
  one = fused_head.head_loss(h, w, t, 1e-3, jnp.float32, 12)
  got = fused_head.head_loss(h, w, t, 1e-3, jnp.float32, c)
  np.testing.assert_allclose(got[0], one[0], rtol=1e-6)


def test_chunk_len_is_the_largest_divisor_within_the_budget():
  assert fused_head.chunk_len(4, 12, 24) == 6
  assert fused_head.chunk_len(4, 12, 1000) == 12
  assert fused_head.chunk_len(64, 512, 8192) == 128
  assert fused_head.chunk_len(100, 7, 50) == 1  # never below one position


def test_only_the_total_carries_a_gradient():
  h, w, t = hidden_and_head(jnp.float32)
  ce_only = jax.grad(lambda h: fused_head.head_loss(h, w, t, 1e-2, jnp.float32, 4)[1][0])(h)
  assert not np.any(np.asarray(ce_only))


def model_pair(**kw):
  cfg = ModelConfig(vocab_size=V, d_model=32, num_layers=1, num_heads=1, seq_len=16,
                    dtype=jnp.float32, **kw)
  return Decoder(cfg), Decoder(ModelConfig(**{**cfg.__dict__, "head_impl": "fused",
                                              "head_chunk_tokens": 16}))


@pytest.mark.slow
def test_train_step_gradients_and_diagnostics_match_through_the_model():
  plain_model, fused_model = model_pair()
  params = jax.tree_util.tree_map(
      jnp.asarray, step_lib.nn.unbox(step_lib.init_params(plain_model, jax.random.PRNGKey(0), 16)))
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, V, (4, 17)), jnp.int32)
  out = {}
  for name, model in (("plain", plain_model), ("fused", fused_model)):
    grad_fn = jax.jit(jax.value_and_grad(
        lambda p, t, model=model: step_lib._forward(p, t, model=model, z_loss_coef=1e-3,
                                                    diagnose=True), has_aux=True))
    out[name] = grad_fn(params, tokens)
  (p_total, (_, _, p_stats)), p_grads = out["plain"]
  (f_total, (_, _, f_stats)), f_grads = out["fused"]
  np.testing.assert_allclose(f_total, p_total, rtol=1e-5)
  assert set(f_stats) == set(p_stats)
  for key in p_stats:
    np.testing.assert_allclose(f_stats[key], p_stats[key], rtol=1e-5, atol=1e-6, err_msg=key)
  for (path, p_g), f_g in zip(jax.tree_util.tree_leaves_with_path(p_grads),
                              jax.tree_util.tree_leaves(f_grads)):
    np.testing.assert_allclose(f_g, p_g, rtol=1e-4, atol=1e-7, err_msg=jax.tree_util.keystr(path))


def tiny_config(head_impl: str, lr: float = 1e-2):
  c = base.get_config(f"size=d32-L1,lr={lr},data=synthetic")
  c.data.synthetic.vocab_size = V
  c.model.update(seq_len=16, dtype="float32", head_impl=head_impl, head_chunk_tokens=16)
  c.data.update(batch_size=4, eval_batches=1)
  c.train.steps, c.opt.warmup_steps = 10, 2
  return c


@pytest.mark.slow
def test_a_short_batched_run_trains_alike():
  """Ten steps of a two-member group (vmapped), fused vs plain: the same losses, float32."""
  losses_by_impl = {}
  for impl in ("plain", "fused"):
    configs = [tiny_config(impl, lr) for lr in (1e-2, 3e-2)]
    run = run_lib.Run(configs, V)
    state = run.init_state(0)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(10):
      batch = run.global_batch(rng.integers(0, V, (4, 17), dtype=np.int32))
      state, metrics = run.train_step(state, batch, diagnose=False)
      rows.append(np.asarray(metrics["train_loss"]))
    rows.append(run.evaluate(state.params, [batch]))
    losses_by_impl[impl] = np.stack(rows)
  assert losses_by_impl["plain"].shape == (11, 2)
  np.testing.assert_allclose(losses_by_impl["fused"], losses_by_impl["plain"], rtol=1e-4)
