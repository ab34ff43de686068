"""The paper's decoder-only Transformer (paper §2.1; docs/paper_notes.md#model) in Flax Linen.

Pre-LN blocks, a final LayerNorm, LayerNorm with a scale only (eps 1e-6), no biases anywhere,
untied embedding and head, GELU MLP of width 4d, RoPE, causal attention scaled by 1/sqrt(d_head),
optional qk-layernorm. Parameters are float32; matmuls run in `dtype` (bfloat16 by default);
attention logits, softmax, output logits and log Z are float32.

Names carry shapes: B batch, L length, D d_model, H heads, K head dim, F mlp width, V vocab
(every letter: docs/conventions.md#shape-names).

Diagnostics (max attention logit, q/k norms and cosine, block output RMS) are sown into the
`diagnostics` collection only when the caller makes it mutable; otherwise none of that code is
traced, so the training step pays nothing for it.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stability import config_schema

ATTENTION_BLOCK = 128  # queries per block of attention_impl=chunked
LN_EPS = 1e-6


def fused_attention_backend(platform: str, dtype, head_dim: int) -> str | None:
  """The `implementation` for `jax.nn.dot_product_attention`: cuDNN flash attention where it
  applies (GPU, half precision, head dim a multiple of 8 up to 128), else XLA's (None: JAX's
  own default, which is XLA and is not flash attention on GPU)."""
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  if platform == "gpu" and half and head_dim % 8 == 0 and head_dim <= 128:
    return "cudnn"
  return None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The architecture; built from `config.model` by `ModelConfig.from_config`."""
  vocab_size: int
  d_model: int = 512
  num_layers: int = 6
  num_heads: int = 8
  mlp_ratio: int = 4
  seq_len: int = 512
  qk_layernorm: str = "per_head"
  attention: str = "softmax"
  attention_impl: str = "explicit"
  forced_kappa: float = 1.0
  rope_base: float = 10000.0
  parametrization: str = "standard"
  mup_base_width: int = 256
  dtype: Any = jnp.bfloat16
  param_dtype: Any = jnp.float32
  remat: str = "none"
  head_impl: str = "plain"  # plain: float32 logits out; fused: the loss takes the head (fused_head)
  # (config.model.head_impl may also say auto, resolved by `from_config` from the vocabulary)
  head_chunk_tokens: int = 2048

  def __post_init__(self):
    if self.head_impl not in ("plain", "fused"):  # `auto` is resolved by from_config
      raise ValueError(f"head_impl={self.head_impl!r}: build with ModelConfig.from_config")

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @classmethod
  def from_config(cls, model_cfg, vocab_size: int | None = None) -> "ModelConfig":
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in model_cfg.items() if k in fields}
    if vocab_size is not None:
      kw["vocab_size"] = vocab_size
    kw["dtype"] = jnp.dtype(kw.get("dtype", "bfloat16"))
    kw["param_dtype"] = jnp.dtype(kw.get("param_dtype", "float32"))
    kw["head_impl"] = config_schema.resolve_head_impl(kw.get("head_impl", "plain"),
                                                      kw["vocab_size"])
    return cls(**kw)


def largest_divisor(n: int, at_most: int) -> int:
  """The largest divisor of `n` that is at most `at_most` (at least 1)."""
  return max(d for d in range(1, max(1, min(at_most, n)) + 1) if n % d == 0)


def _kernel_init(scale: float = 1.0) -> nn.initializers.Initializer:
  """Truncated normal with variance scale/fan_in (Flax's lecun_normal when scale=1)."""
  return nn.initializers.variance_scaling(scale, "fan_in", "truncated_normal")


def _dense(features, axes, *, name, dtype, param_dtype, axis=-1, init=None, dot_general=None):
  """A bias-free DenseGeneral whose kernel carries logical axis names."""
  return nn.DenseGeneral(
      features=features, axis=axis, use_bias=False, dtype=dtype, param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(init or _kernel_init(), axes),
      dot_general=dot_general or jax.lax.dot_general, name=name)


def _rows(dense: nn.Module, x: jax.Array, n_in: int = 1) -> jax.Array:
  """`dense` applied to `x` with its leading dims flattened into one row dim: XLA:CPU runs a
  [rows, in] × [in, out] matmul and its weight gradient without the transposing copies that a
  [B, L, in] contraction makes it insert (docs/performance.md)."""
  lead = x.shape[:-n_in]
  y = dense(x.reshape((-1,) + x.shape[len(lead):]))
  return y.reshape(lead + y.shape[1:])


def _layernorm(name: str, axis_name: str = "norm") -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=LN_EPS, use_bias=False, dtype=jnp.float32, param_dtype=jnp.float32,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, (axis_name,)), name=name)


def rope_tables(length: int, head_dim: int, base: float) -> tuple[jax.Array, jax.Array]:
  """(cos [L, K], signed sin [L, K]) of the rotate-half RoPE, built once per trace from the static
  shape (constants of the compiled step): rope(x) = x·cos + swap_halves(x)·sin, where the sin
  table's first half is negated."""
  half = head_dim // 2
  inv_freq_K2 = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angle_LxK2 = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq_K2[None, :]
  sin_LxK2, cos_LxK2 = jnp.sin(angle_LxK2), jnp.cos(angle_LxK2)
  return (jnp.concatenate([cos_LxK2, cos_LxK2], axis=-1),
          jnp.concatenate([-sin_LxK2, sin_LxK2], axis=-1))


def swap_halves(x: jax.Array) -> jax.Array:
  """[x2, x1] from [x1, x2] along the last axis, as one reverse of a size-2 axis: an index map
  that XLA fuses into the elementwise loop around it (no slice, concatenate or pad)."""
  *lead, k = x.shape
  return jnp.flip(x.reshape(*lead, 2, k // 2), axis=-2).reshape(x.shape)


def rope(x_BxLxHxK: jax.Array, base: float, tables=None) -> jax.Array:
  """Rotary position embedding on the full head dim (rotate-half convention), in float32."""
  _, length, _, k = x_BxLxHxK.shape
  cos_LxK, sin_LxK = tables if tables is not None else rope_tables(length, k, base)
  x = x_BxLxHxK.astype(jnp.float32)
  return x * cos_LxK[:, None, :] + swap_halves(x) * sin_LxK[:, None, :]


def rms_normalize(x_BxLxHxK: jax.Array, kappa: float) -> jax.Array:
  """g(z) = sqrt(κ)·z / sqrt(mean(z²)) over the head dim (Fig 10's forced logit size)."""
  x = x_BxLxHxK.astype(jnp.float32)
  return jnp.sqrt(kappa) * x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-12)


def chunked_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, scale: float,
                      block: int = ATTENTION_BLOCK):
  """Causal softmax attention, one block of queries at a time. Each block's scores are recomputed
  in the backward pass rather than stored: B·H·block·L floats live at once instead of the
  explicit path's B·H·L² per layer. Blocks are the largest divisor of L up to `block`."""
  b, length, h, k = q_BxLxHxK.shape
  c = largest_divisor(length, block)
  q_NxBxCxHxK = jnp.swapaxes(q_BxLxHxK.reshape(b, length // c, c, h, k), 0, 1)

  @jax.checkpoint
  def one_block(q_BxCxHxK, start):
    logits_BxHxCxL = jnp.einsum("bqhk,bshk->bhqs", q_BxCxHxK, k_BxLxHxK,
                                preferred_element_type=jnp.float32) * scale
    causal_CxL = (start + jnp.arange(c))[:, None] >= jnp.arange(length)[None, :]
    masked = jnp.where(causal_CxL, logits_BxHxCxL, jnp.finfo(jnp.float32).min)
    weights_BxHxCxL = jax.nn.softmax(masked, axis=-1).astype(v_BxLxHxK.dtype)
    return jnp.einsum("bhqs,bshk->bqhk", weights_BxHxCxL, v_BxLxHxK)

  starts_N = jnp.arange(0, length, c)
  out_NxBxCxHxK = jax.lax.map(lambda args: one_block(*args), (q_NxBxCxHxK, starts_N))
  return jnp.swapaxes(out_NxBxCxHxK, 0, 1).reshape(b, length, h, k)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def causal_attention(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, scale: float):
  """Causal softmax attention on head-major inputs, float32 logits and probabilities.

  Its backward is written out, dS = P ∘ (dP − rowsum(P ∘ dP)): XLA:CPU then runs five batched
  matmuls and a few fused loops per layer instead of the transposes, converts and reductions
  that differentiating einsum + softmax on [B, L, H, K] leaves it. It is autodiff's formula on
  the forward's own probabilities. Two cheaper variants were tried and dropped: forming P again
  from q, k and the log-normaliser (at the logits this paper studies, up to 1e6, one ulp apart
  is another softmax), and flash attention's rowsum(dO ∘ O), which in a diverging run (loss
  1e8) put a vmapped LR sweep's gradient 50% away from the same run alone.
  """
  return _causal_attention_fwd(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, scale)[0]


def _causal_attention_fwd(q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, scale):
  length = q_BxHxLxK.shape[2]
  logits_BxHxLxL = jnp.einsum("bhqk,bhsk->bhqs", q_BxHxLxK, k_BxHxLxK,
                              preferred_element_type=jnp.float32) * scale
  masked = jnp.where(jnp.tril(jnp.ones((length, length), bool)), logits_BxHxLxL, -jnp.inf)
  unnormalized = jnp.exp(masked - jnp.max(masked, axis=-1, keepdims=True))
  probs_BxHxLxL = unnormalized / jnp.sum(unnormalized, axis=-1, keepdims=True)
  out_BxHxLxK = jnp.einsum("bhqs,bhsk->bhqk", probs_BxHxLxL.astype(v_BxHxLxK.dtype), v_BxHxLxK)
  return out_BxHxLxK, (q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, probs_BxHxLxL)


def _causal_attention_bwd(scale, residuals, dout_BxHxLxK):
  q_BxHxLxK, k_BxHxLxK, v_BxHxLxK, probs_BxHxLxL = residuals
  dtype = v_BxHxLxK.dtype
  dv_BxHxLxK = jnp.einsum("bhqs,bhqk->bhsk", probs_BxHxLxL.astype(dtype), dout_BxHxLxK)
  dprobs_BxHxLxL = jnp.einsum("bhqk,bhsk->bhqs", dout_BxHxLxK, v_BxHxLxK,
                              preferred_element_type=jnp.float32)
  rowsum_BxHxLx1 = jnp.sum(probs_BxHxLxL * dprobs_BxHxLxL, axis=-1, keepdims=True)
  dlogits_BxHxLxL = (probs_BxHxLxL * (dprobs_BxHxLxL - rowsum_BxHxLx1) * scale).astype(dtype)
  dq_BxHxLxK = jnp.einsum("bhqs,bhsk->bhqk", dlogits_BxHxLxL, k_BxHxLxK)
  dk_BxHxLxK = jnp.einsum("bhqs,bhqk->bhsk", dlogits_BxHxLxL, q_BxHxLxK)
  return dq_BxHxLxK.astype(q_BxHxLxK.dtype), dk_BxHxLxK.astype(k_BxHxLxK.dtype), dv_BxHxLxK


causal_attention.defvjp(_causal_attention_fwd, _causal_attention_bwd)


def _scores(q_BxLxHxK, k_BxLxHxK, scale: float):
  """(float32 attention logits [B, H, L, L], the causal mask [L, L])."""
  length = q_BxLxHxK.shape[1]
  logits_BxHxLxL = jnp.einsum("bqhk,bshk->bhqs", q_BxLxHxK, k_BxLxHxK,
                              preferred_element_type=jnp.float32) * scale
  return logits_BxHxLxL, jnp.tril(jnp.ones((length, length), bool))


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.cfg
    h, k = cfg.num_heads, cfg.head_dim
    dense = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    q_init = nn.initializers.zeros if cfg.parametrization == "mup_full" else None
    q_BxLxHxK = _rows(_dense((h, k), ("embed", "heads", "kv"), name="wq", init=q_init, **dense),
                      x_BxLxD)
    k_BxLxHxK = _rows(_dense((h, k), ("embed", "heads", "kv"), name="wk", **dense), x_BxLxD)
    v_BxLxHxK = _rows(_dense((h, k), ("embed", "heads", "kv"), name="wv", **dense), x_BxLxD)

    if cfg.qk_layernorm == "per_head":  # scale of K params, shared across heads
      q_BxLxHxK = _layernorm("q_norm", "kv")(q_BxLxHxK)
      k_BxLxHxK = _layernorm("k_norm", "kv")(k_BxLxHxK)
    elif cfg.qk_layernorm == "full_width":  # over d_model, as before the head split
      b, length = x_BxLxD.shape[:2]
      q_BxLxHxK = _layernorm("q_norm")(q_BxLxHxK.reshape(b, length, h * k)).reshape(
          b, length, h, k)
      k_BxLxHxK = _layernorm("k_norm")(k_BxLxHxK.reshape(b, length, h * k)).reshape(
          b, length, h, k)

    tables = rope_tables(x_BxLxD.shape[1], k, cfg.rope_base)  # once for q and k
    q_BxLxHxK = rope(q_BxLxHxK, cfg.rope_base, tables)
    k_BxLxHxK = rope(k_BxLxHxK, cfg.rope_base, tables)
    if cfg.attention == "forced":
      q_BxLxHxK = rms_normalize(q_BxLxHxK, cfg.forced_kappa)
      k_BxLxHxK = rms_normalize(k_BxLxHxK, cfg.forced_kappa)
    scale = 1.0 / k if cfg.parametrization == "mup_full" else k ** -0.5

    q_BxLxHxK = q_BxLxHxK.astype(cfg.dtype)
    k_BxLxHxK = k_BxLxHxK.astype(cfg.dtype)
    diagnose = self.is_mutable_collection("diagnostics")
    if cfg.attention != "softmax":
      out_BxLxHxK = self._explicit(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, scale, diagnose)
    else:
      if diagnose:
        self._sow_kernel_diagnostics(q_BxLxHxK, k_BxLxHxK, scale)
      if cfg.attention_impl == "explicit":
        head_major = lambda t: jnp.swapaxes(t, 1, 2)
        out_BxLxHxK = head_major(causal_attention(
            head_major(q_BxLxHxK), head_major(k_BxLxHxK), head_major(v_BxLxHxK), scale))
      elif cfg.attention_impl == "fused":
        out_BxLxHxK = jax.nn.dot_product_attention(
            q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, scale=scale, is_causal=True,
            implementation=fused_attention_backend(jax.default_backend(), cfg.dtype, k))
      else:
        out_BxLxHxK = chunked_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, scale)

    return _rows(_dense(cfg.d_model, ("heads", "kv", "embed"), axis=(-2, -1), name="wo",
                        **dense), out_BxLxHxK, n_in=2)

  def _explicit(self, q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, scale, diagnose):
    cfg = self.cfg
    logits_BxHxLxL, causal_LxL = _scores(q_BxLxHxK, k_BxLxHxK, scale)
    if diagnose:
      self._sow_diagnostics(q_BxLxHxK, k_BxLxHxK, logits_BxHxLxL, causal_LxL, scale)
    if cfg.attention == "squared_relu":  # Fig E.11: pointwise, scaled by 1/sqrt(seq_len)
      weights = jnp.where(causal_LxL, jnp.square(jax.nn.relu(logits_BxHxLxL)), 0.0)
      weights_BxHxLxL = weights / jnp.sqrt(float(cfg.seq_len))
    else:
      masked = jnp.where(causal_LxL, logits_BxHxLxL, jnp.finfo(jnp.float32).min)
      weights_BxHxLxL = jax.nn.softmax(masked, axis=-1)
    return jnp.einsum("bhqs,bshk->bqhk", weights_BxHxLxL.astype(cfg.dtype), v_BxLxHxK)

  def _sow_kernel_diagnostics(self, q_BxLxHxK, k_BxLxHxK, scale):
    """The explicit path's statistics where the output comes from a kernel (fused, chunked):
    the scores are formed once more, outside the gradient, and only reduced, so the log step
    holds no B·H·L² scores for the backward pass and trains through the same kernel."""
    q_BxLxHxK, k_BxLxHxK = jax.lax.stop_gradient((q_BxLxHxK, k_BxLxHxK))
    logits_BxHxLxL, causal_LxL = _scores(q_BxLxHxK, k_BxLxHxK, scale)
    self._sow_diagnostics(q_BxLxHxK, k_BxLxHxK, logits_BxHxLxL, causal_LxL, scale)

  def _sow_diagnostics(self, q_BxLxHxK, k_BxLxHxK, logits_BxHxLxL, causal_LxL, scale):
    """Max logit over valid causal entries; mean q and k norms; mean causal cosine(q_i, k_j)."""
    valid = jnp.broadcast_to(causal_LxL, logits_BxHxLxL.shape)
    max_logit = jnp.max(jnp.where(valid, logits_BxHxLxL, -jnp.inf))
    q_norm_BxLxH = jnp.linalg.norm(q_BxLxHxK.astype(jnp.float32), axis=-1)
    k_norm_BxLxH = jnp.linalg.norm(k_BxLxHxK.astype(jnp.float32), axis=-1)
    norms_BxHxLxL = (jnp.transpose(q_norm_BxLxH, (0, 2, 1))[..., :, None]
                     * jnp.transpose(k_norm_BxLxH, (0, 2, 1))[..., None, :])
    cos_BxHxLxL = logits_BxHxLxL / scale / jnp.maximum(norms_BxHxLxL, 1e-30)
    mean_cos = jnp.sum(jnp.where(valid, cos_BxHxLxL, 0.0)) / jnp.sum(valid)
    self.sow("diagnostics", "attn_logit_max", max_logit)
    self.sow("diagnostics", "query_norm", jnp.mean(q_norm_BxLxH))
    self.sow("diagnostics", "key_norm", jnp.mean(k_norm_BxLxH))
    self.sow("diagnostics", "qk_cos", mean_cos)


class Mlp(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.cfg
    dense = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)
    h_BxLxF = _rows(_dense(cfg.mlp_ratio * cfg.d_model, ("embed", "mlp"), name="wi", **dense),
                    x_BxLxD)
    h_BxLxF = nn.gelu(h_BxLxF, approximate=True)
    return _rows(_dense(cfg.d_model, ("mlp", "embed"), name="wo", **dense), h_BxLxF)


class Block(nn.Module):
  """Pre-LN residual block: x + attn(LN(x)), then x + mlp(LN(x))."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
    cfg = self.cfg
    x_BxLxD = x_BxLxD + Attention(cfg, name="attn")(
        _layernorm("ln_attn")(x_BxLxD).astype(cfg.dtype))
    x_BxLxD = x_BxLxD + Mlp(cfg, name="mlp")(
        _layernorm("ln_mlp")(x_BxLxD).astype(cfg.dtype))
    if self.is_mutable_collection("diagnostics"):
      x = x_BxLxD.astype(jnp.float32)
      self.sow("diagnostics", "block_out_rms", jnp.sqrt(jnp.mean(x * x)))
    return x_BxLxD


class Decoder(nn.Module):
  """tokens_BxL -> float32 logits_BxLxV. With num_layers=0 it is the bigram model of Fig 10."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxL: jax.Array, hidden_only: bool = False) -> jax.Array:
    """float32 logits [B, L, V]; with `hidden_only` the final normalised hidden states
    [B, L, D] instead, for a loss that applies the head itself (`fused_head`)."""
    cfg = self.cfg
    embed_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)
    # Gathered in float32 and cast after: the table is not cast whole every step, and its
    # gradient is a float32 scatter-add.
    x_BxLxD = nn.Embed(
        cfg.vocab_size, cfg.d_model, dtype=cfg.param_dtype, param_dtype=cfg.param_dtype,
        embedding_init=nn.with_logical_partitioning(embed_init, ("vocab", "embed")),
        name="embed")(tokens_BxL).astype(cfg.dtype)
    x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "embed"))

    block = Block
    if cfg.remat != "none":
      policy = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable
                if cfg.remat == "dots" else None)
      block = nn.remat(Block, policy=policy)
    for i in range(cfg.num_layers):
      x_BxLxD = block(cfg, name=f"block_{i}")(x_BxLxD)
      x_BxLxD = nn.with_logical_constraint(x_BxLxD, ("batch", "length", "embed"))

    x_BxLxD = _layernorm("ln_final")(x_BxLxD)
    if hidden_only and not self.is_initializing():  # init still creates the head's kernel
      return x_BxLxD
    # μParam (intermediate, full): head init std sqrt(base_fan_in)/fan_in = sqrt(base)/d.
    head_scale = (cfg.mup_base_width / cfg.d_model
                  if cfg.parametrization in ("mup_intermediate", "mup_full") else 1.0)
    f32_out = functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32)
    head = _dense(cfg.vocab_size, ("embed", "vocab"), name="head", dtype=cfg.dtype,
                  param_dtype=cfg.param_dtype, init=_kernel_init(head_scale), dot_general=f32_out)
    return _rows(head, x_BxLxD.astype(cfg.dtype))
