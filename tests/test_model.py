"""The decoder against a float64 numpy forward, and the properties the paper relies on."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stability import sizes
from stability import diagnostics, flops
from stability import model as model_lib
from stability.model import Decoder, ModelConfig
from tests import reference

VOCAB = 97


def make(seed=0, **kw):
  cfg = ModelConfig(**{**dict(vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=2,
                              seq_len=12, dtype=jnp.float32), **kw})
  model = Decoder(cfg)
  tokens = jax.random.randint(jax.random.PRNGKey(seed + 1), (2, cfg.seq_len), 0, VOCAB)
  params = nn.unbox(model.init(jax.random.PRNGKey(seed), tokens)["params"])
  return cfg, model, params, tokens


def diagnose(model, params, tokens):
  logits, variables = model.apply({"params": params}, tokens, mutable=["diagnostics"])
  return logits, diagnostics.flatten_sown(variables["diagnostics"])


# float32 model vs float64 numpy: logits are O(1), so 2e-4 absolute is ~1e3 × float32 epsilon.
@pytest.mark.parametrize("kw", [
    dict(),
    dict(qk_layernorm="off"),
    dict(qk_layernorm="full_width"),
    dict(attention="squared_relu"),
    dict(attention="forced", forced_kappa=30.0, qk_layernorm="off"),
    dict(parametrization="mup_full"),
    dict(num_layers=0),
    dict(num_heads=4, num_layers=3, rope_base=500.0),
])
def test_forward_matches_float64_numpy(kw):
  cfg, model, params, tokens = make(**kw)
  if cfg.parametrization == "mup_full":  # a zero query would hide the attention maths
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: x + 0.1 if "wq" in jax.tree_util.keystr(p) else x, params)
  # Random LayerNorm scales so that a scale applied to the wrong axis would show.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x * (1 + 0.3 * jax.random.normal(jax.random.PRNGKey(x.size), x.shape))
      if "scale" in jax.tree_util.keystr(p) else x, params)
  logits = np.asarray(model.apply({"params": params}, tokens))
  expected, _ = reference.forward(jax.device_get(params), np.asarray(tokens), cfg)
  assert logits.dtype == np.float32
  np.testing.assert_allclose(logits, expected, atol=2e-4, rtol=2e-4)


def test_bfloat16_forward_is_close_to_float64():
  """bf16 matmuls with f32 params: ~3 significant digits, so a loose bound."""
  cfg, model, params, tokens = make(dtype=jnp.bfloat16)
  logits = np.asarray(model.apply({"params": params}, tokens))
  expected, _ = reference.forward(jax.device_get(params), np.asarray(tokens), cfg)
  assert logits.dtype == np.float32
  np.testing.assert_allclose(logits, expected, atol=0.1)
  assert np.abs(logits - expected).mean() < 0.02


@pytest.mark.parametrize("qkln", ["per_head", "off"])
def test_causality_no_gradient_from_future_tokens(qkln):
  """d logits[:, i] / d input-embedding[:, j] is exactly 0 for j > i, and non-zero for j <= i."""
  cfg, model, params, tokens = make(qk_layernorm=qkln)
  b, length = tokens.shape
  # Give every (batch, position) its own embedding row, so a row's gradient is a position's.
  own_rows = params["embed"]["embedding"][tokens].reshape(b * length, cfg.d_model)
  positions_BxL = jnp.arange(b * length).reshape(b, length)
  wide = Decoder(ModelConfig(**{**cfg.__dict__, "vocab_size": b * length}))
  head = params["head"]["kernel"][:, :b * length]

  def logits_at(rows, i):
    p = {**params, "embed": {"embedding": rows}, "head": {"kernel": head}}
    return wide.apply({"params": p}, positions_BxL)[:, i].sum()

  for i in (0, 5, length - 1):
    g_BxL = np.abs(np.asarray(jax.grad(logits_at)(own_rows, i))).sum(-1).reshape(b, length)
    assert np.all(g_BxL[:, i + 1:] == 0), f"position {i} sees the future"
    assert np.all(g_BxL[:, :i + 1] > 0), f"position {i} ignores its past"


def test_qk_layernorm_bounds_attention_logits():
  """With per-head qk-LN (unit scales) |q|=|k|=sqrt(d_head), so |logit| <= sqrt(d_head)."""
  blow_up = lambda p: jax.tree_util.tree_map_with_path(
      lambda path, x: x * 1000.0 if any(w in jax.tree_util.keystr(path) for w in ("wq", "wk"))
      else x, p)
  cfg, model, params, tokens = make(qk_layernorm="per_head")
  _, diag = diagnose(model, blow_up(params), tokens)
  bound = np.sqrt(cfg.d_model // cfg.num_heads) * (1 + 1e-3)
  assert all(diag[f"attn_logit_max/block_{i}"] <= bound for i in range(cfg.num_layers))

  cfg, model, params, tokens = make(qk_layernorm="off")
  _, diag = diagnose(model, blow_up(params), tokens)
  assert diag["attn_logit_max/block_0"] > 1e4


def test_diagnostics_match_direct_computation():
  cfg, model, params, tokens = make(qk_layernorm="off")
  _, diag = diagnose(model, params, tokens)
  _, expected_max = reference.forward(jax.device_get(params), np.asarray(tokens), cfg)
  for i in range(cfg.num_layers):
    np.testing.assert_allclose(diag[f"attn_logit_max/block_{i}"], expected_max[i], rtol=1e-4)
  # q/k norms and cosine of block 0 from the raw projections (no qk-LN here).
  p = jax.device_get(params)["block_0"]
  x = reference.layernorm(np.asarray(params["embed"]["embedding"], np.float64)[tokens],
                          p["ln_attn"]["scale"])
  q = reference.rope(np.einsum("bld,dhk->blhk", x, p["attn"]["wq"]["kernel"]), cfg.rope_base)
  k = reference.rope(np.einsum("bld,dhk->blhk", x, p["attn"]["wk"]["kernel"]), cfg.rope_base)
  np.testing.assert_allclose(diag["q_norm/block_0"], np.linalg.norm(q, axis=-1).mean(), rtol=1e-4)
  np.testing.assert_allclose(diag["k_norm/block_0"], np.linalg.norm(k, axis=-1).mean(), rtol=1e-4)
  qn = q / np.linalg.norm(q, axis=-1, keepdims=True)
  kn = k / np.linalg.norm(k, axis=-1, keepdims=True)
  cos = np.einsum("bqhk,bshk->bhqs", qn, kn)
  causal = np.tril(np.ones((cfg.seq_len, cfg.seq_len), bool))
  np.testing.assert_allclose(diag["qk_cos/block_0"], cos[..., causal].mean(), rtol=1e-4)
  # Block output RMS: the residual stream after block 0.
  assert diag["block_out_rms/block_0"] > 0


def test_fused_attention_equals_explicit():
  cfg, model, params, tokens = make()
  fused = Decoder(ModelConfig(**{**cfg.__dict__, "attention_impl": "fused"}))
  np.testing.assert_allclose(fused.apply({"params": params}, tokens),
                             model.apply({"params": params}, tokens), atol=1e-5)


@pytest.mark.parametrize("name", sizes.PAPER_LADDER + sizes.CPU_SIZES + sizes.DEPTH_SWEEP)
def test_non_embedding_params_are_12_L_d2(name):
  d, layers, heads = sizes.parse(name)
  cfg = ModelConfig(vocab_size=32101, d_model=d, num_layers=layers, num_heads=heads, seq_len=8)
  shapes = jax.eval_shape(lambda: nn.unbox(Decoder(cfg).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]))
  kernels = sum(np.prod(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(shapes)
                if "block_" in jax.tree_util.keystr(p) and "kernel" in jax.tree_util.keystr(p))
  assert kernels == 12 * layers * d * d == flops.non_embedding_params(d, layers)


def test_paper_ladder_parameter_counts():
  counts = {n: sizes.non_embedding_params(n) for n in sizes.PAPER_LADDER}
  assert counts["d256-L3"] == 2_359_296          # "2.4M" (Fig 4)
  assert counts["d2048-L24"] == 1_207_959_552    # "1.2B"
  assert counts["d4096-L24"] == 4_831_838_208    # "4.8B"


@pytest.mark.parametrize("param", ["standard", "mup_intermediate", "mup_full"])
def test_init_scales(param):
  d = 512
  cfg = ModelConfig(vocab_size=4000, d_model=d, num_layers=1, num_heads=8, seq_len=4,
                    parametrization=param)
  params = nn.unbox(Decoder(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  std = lambda x: float(np.std(np.asarray(x)))
  assert std(params["embed"]["embedding"]) == pytest.approx(d ** -0.5, rel=0.02)
  assert std(params["block_0"]["mlp"]["wi"]["kernel"]) == pytest.approx(d ** -0.5, rel=0.02)
  assert std(params["block_0"]["mlp"]["wo"]["kernel"]) == pytest.approx((4 * d) ** -0.5, rel=0.02)
  assert std(params["block_0"]["attn"]["wk"]["kernel"]) == pytest.approx(d ** -0.5, rel=0.02)
  head = 16 / d if param != "standard" else d ** -0.5   # sqrt(256)/d under μParam
  assert std(params["head"]["kernel"]) == pytest.approx(head, rel=0.02)
  q = params["block_0"]["attn"]["wq"]["kernel"]
  assert (std(q) == 0) == (param == "mup_full")


def test_fused_attention_is_cudnn_flash_only_where_cudnn_applies():
  assert model_lib.fused_attention_backend("gpu", jnp.bfloat16, 64) == "cudnn"
  assert model_lib.fused_attention_backend("gpu", jnp.float16, 128) == "cudnn"
  assert model_lib.fused_attention_backend("gpu", jnp.float32, 64) is None  # cuDNN: half only
  assert model_lib.fused_attention_backend("gpu", jnp.bfloat16, 256) is None
  assert model_lib.fused_attention_backend("gpu", jnp.bfloat16, 20) is None
  assert model_lib.fused_attention_backend("cpu", jnp.bfloat16, 64) is None
  assert model_lib.fused_attention_backend("tpu", jnp.bfloat16, 64) is None


def test_fused_attention_gives_the_explicit_loss_and_gradients_in_bfloat16():
  """The mixed-precision training configuration; on a GPU the fused path is cuDNN's kernel."""
  cfg, _, params, _ = make(d_model=64, num_heads=4, seq_len=64, dtype=jnp.bfloat16)
  tokens = jax.random.randint(jax.random.PRNGKey(3), (4, cfg.seq_len + 1), 0, VOCAB)

  def loss_and_grads(impl):
    model = Decoder(dataclasses.replace(cfg, attention_impl=impl))
    def loss(p):
      logits = model.apply({"params": p}, tokens[:, :-1]).astype(jnp.float32)
      return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))
    return jax.jit(jax.value_and_grad(loss))(params)

  (loss_e, grads_e), (loss_f, grads_f) = loss_and_grads("explicit"), loss_and_grads("fused")
  np.testing.assert_allclose(loss_f, loss_e, rtol=2e-3)
  flat_e, flat_f = jax.tree_util.tree_leaves(grads_e), jax.tree_util.tree_leaves(grads_f)
  for g_e, g_f in zip(flat_e, flat_f):  # bf16 activations: compare each tensor's error to its norm
    assert np.linalg.norm(np.asarray(g_f - g_e)) <= 2e-2 * np.linalg.norm(np.asarray(g_e)) + 1e-6


@pytest.mark.parametrize("length", [16, 14])  # 4 blocks of 4; 14 is not a multiple: blocks of 2
def test_chunked_attention_equals_jax_attention_with_gradients(length):
  """`attention_impl=chunked` against JAX's own causal attention, float32: values and the
  gradients of q, k and v (its backward recomputes each block's scores)."""
  keys = jax.random.split(jax.random.PRNGKey(7), 4)
  q, k, v = (jax.random.normal(key, (2, length, 3, 8)) for key in keys[:3])
  cotangent = jax.random.normal(keys[3], q.shape)
  chunked = lambda q, k, v: model_lib.chunked_attention(q, k, v, 0.3, block=4)
  reference = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, scale=0.3, is_causal=True)
  out, vjp = jax.vjp(chunked, q, k, v)
  want, vjp_want = jax.vjp(reference, q, k, v)
  np.testing.assert_allclose(out, want, atol=1e-5)
  for got_grad, want_grad in zip(vjp(cotangent), vjp_want(cotangent)):
    np.testing.assert_allclose(got_grad, want_grad, atol=1e-5)


def test_chunked_attention_in_the_model_equals_explicit():
  cfg, model, params, tokens = make()
  chunked = Decoder(ModelConfig(**{**cfg.__dict__, "attention_impl": "chunked"}))
  np.testing.assert_allclose(chunked.apply({"params": params}, tokens),
                             model.apply({"params": params}, tokens), atol=1e-5)


@pytest.mark.parametrize("impl", ["fused", "chunked"])
def test_a_log_step_through_an_attention_kernel_reports_the_explicit_statistics(impl):
  """The log step attends through the kernel too; its statistics equal the explicit path's."""
  cfg, model, params, tokens = make()
  logits_e, diag_e = diagnose(model, params, tokens)
  logits_k, diag_k = diagnose(Decoder(dataclasses.replace(cfg, attention_impl=impl)), params,
                              tokens)
  np.testing.assert_allclose(logits_k, logits_e, atol=1e-5)
  assert sorted(diag_k) == sorted(diag_e) and any("attn_logit_max" in key for key in diag_e)
  for key in diag_e:
    np.testing.assert_allclose(diag_k[key], diag_e[key], rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("dtype, atol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_causal_attention_and_its_written_out_backward_equal_jax_attention(dtype, atol):
  """The explicit path's attention (`causal_attention`, head-major, backward by hand) against
  JAX's own causal attention and its autodiff: values and the gradients of q, k and v."""
  keys = jax.random.split(jax.random.PRNGKey(3), 4)
  q, k, v = (jax.random.normal(key, (2, 12, 3, 8)).astype(dtype) for key in keys[:3])
  cotangent = jax.random.normal(keys[3], q.shape).astype(dtype)
  head_major = lambda t: jnp.swapaxes(t, 1, 2)
  ours = lambda q, k, v: head_major(model_lib.causal_attention(
      head_major(q), head_major(k), head_major(v), 0.4))
  theirs = lambda q, k, v: jax.nn.dot_product_attention(
      q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), scale=0.4,
      is_causal=True)
  out, vjp = jax.vjp(ours, q, k, v)
  want, vjp_want = jax.vjp(theirs, q, k, v)
  assert out.dtype == dtype
  np.testing.assert_allclose(np.float32(out), want, atol=atol)
  for got, expected in zip(vjp(cotangent), vjp_want(cotangent.astype(jnp.float32))):
    assert got.dtype == dtype
    np.testing.assert_allclose(np.float32(got), expected, atol=atol)


def test_rope_by_tables_equals_the_rotate_half_formula():
  """rope = x·cos + swap_halves(x)·sin (signed) is the rotate-half RoPE written with slices."""
  x = jax.random.normal(jax.random.PRNGKey(5), (2, 10, 3, 8))
  half = 4
  inv_freq = 10000.0 ** (-np.arange(half) / half)
  angle = np.arange(10)[:, None] * inv_freq[None, :]
  sin, cos = np.sin(angle)[None, :, None, :], np.cos(angle)[None, :, None, :]
  x1, x2 = np.asarray(x[..., :half]), np.asarray(x[..., half:])
  want = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  np.testing.assert_allclose(model_lib.rope(x, 10000.0), want, atol=1e-5)
