"""A float64 numpy implementation of the paper's decoder: the independent reference for model.py.

Written from docs/paper_notes.md#model directly (not from model.py): pre-LN blocks, LayerNorm
without bias (eps 1e-6), RoPE (rotate-half, base 10000), causal softmax attention scaled by
1/sqrt(d_head), tanh-GELU MLP, final LayerNorm, untied head.
"""

import numpy as np

EPS = 1e-6


def layernorm(x, scale):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + EPS) * scale


def gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def rope(x, base):
  """x: [B, L, H, K]; pairs (i, i + K/2) rotate by angle pos · base^(-i/(K/2))."""
  _, length, _, k = x.shape
  half = k // 2
  freq = base ** (-np.arange(half) / half)
  ang = np.arange(length)[:, None] * freq[None, :]
  sin, cos = np.sin(ang)[None, :, None, :], np.cos(ang)[None, :, None, :]
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attention(p, x, cfg):
  b, length, _ = x.shape
  h, k = cfg.num_heads, cfg.d_model // cfg.num_heads
  q = np.einsum("bld,dhk->blhk", x, p["wq"]["kernel"])
  kk = np.einsum("bld,dhk->blhk", x, p["wk"]["kernel"])
  v = np.einsum("bld,dhk->blhk", x, p["wv"]["kernel"])
  if cfg.qk_layernorm == "per_head":
    q, kk = layernorm(q, p["q_norm"]["scale"]), layernorm(kk, p["k_norm"]["scale"])
  elif cfg.qk_layernorm == "full_width":
    q = layernorm(q.reshape(b, length, h * k), p["q_norm"]["scale"]).reshape(b, length, h, k)
    kk = layernorm(kk.reshape(b, length, h * k), p["k_norm"]["scale"]).reshape(b, length, h, k)
  q, kk = rope(q, cfg.rope_base), rope(kk, cfg.rope_base)
  if cfg.attention == "forced":
    q = np.sqrt(cfg.forced_kappa) * q / np.sqrt((q ** 2).mean(-1, keepdims=True))
    kk = np.sqrt(cfg.forced_kappa) * kk / np.sqrt((kk ** 2).mean(-1, keepdims=True))
  scale = 1 / k if cfg.parametrization == "mup_full" else 1 / np.sqrt(k)
  z = np.einsum("bqhk,bshk->bhqs", q, kk) * scale
  causal = np.tril(np.ones((length, length), bool))
  if cfg.attention == "squared_relu":
    w = np.where(causal, np.maximum(z, 0) ** 2, 0) / np.sqrt(cfg.seq_len)
  else:
    z = np.where(causal, z, -np.inf)
    w = np.exp(z - z.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
  out = np.einsum("bhqs,bshk->bqhk", w, v)
  return np.einsum("blhk,hkd->bld", out, p["wo"]["kernel"]), z


def forward(params, tokens, cfg):
  """float64 logits [B, L, V] and the max causal attention logit of every block."""
  p = _to64(params)
  x = p["embed"]["embedding"][tokens]
  max_logits = []
  for i in range(cfg.num_layers):
    blk = p[f"block_{i}"]
    a, z = attention(blk["attn"], layernorm(x, blk["ln_attn"]["scale"]), cfg)
    max_logits.append(np.max(z[np.isfinite(z)]) if cfg.attention != "squared_relu" else None)
    x = x + a
    hidden = gelu_tanh(layernorm(x, blk["ln_mlp"]["scale"]) @ blk["mlp"]["wi"]["kernel"])
    x = x + hidden @ blk["mlp"]["wo"]["kernel"]
  x = layernorm(x, p["ln_final"]["scale"])
  return x @ p["head"]["kernel"], max_logits


def _to64(tree):
  if isinstance(tree, dict):
    return {k: _to64(v) for k, v in tree.items()}
  return np.asarray(tree, np.float64)
