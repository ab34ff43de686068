"""The same decoder, loss and optimizer in PyTorch: the reference that `bench.py` times against.

Architecture as `model.py` (pre-LN, LayerNorm without bias, eps 1e-6, RoPE rotate-half, per-head
qk-layernorm, tanh-GELU MLP 4d, untied head, causal softmax ÷ sqrt(d_head)); loss CE + z-loss;
optimizer clip → AdamW with independent decay (torch's AdamW decays by lr·wd·θ, so wd = λ/η gives
s_t·λ·θ) under the same warm-up + cosine schedule. Weights can be copied from a JAX state, so
the two can be checked to compute the same loss before they are timed.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stability import host_memory
from stability import timing

LN_EPS = 1e-6


def _rope(x_BxLxHxK: torch.Tensor, base: float) -> torch.Tensor:
  _, length, _, k = x_BxLxHxK.shape
  half = k // 2
  inv_freq = base ** (-torch.arange(half, dtype=torch.float32, device=x_BxLxHxK.device) / half)
  angle = torch.arange(length, dtype=torch.float32, device=x_BxLxHxK.device)[:, None] * inv_freq
  sin, cos = torch.sin(angle)[None, :, None, :], torch.cos(angle)[None, :, None, :]
  x = x_BxLxHxK.float()
  x1, x2 = x[..., :half], x[..., half:]
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):

  def __init__(self, d: int, heads: int, mlp_ratio: int, qk_layernorm: bool, rope_base: float):
    super().__init__()
    self.heads, self.head_dim, self.rope_base = heads, d // heads, rope_base
    self.ln_attn = nn.LayerNorm(d, eps=LN_EPS, bias=False)
    self.wq = nn.Linear(d, d, bias=False)
    self.wk = nn.Linear(d, d, bias=False)
    self.wv = nn.Linear(d, d, bias=False)
    self.wo = nn.Linear(d, d, bias=False)
    self.q_norm = nn.LayerNorm(self.head_dim, eps=LN_EPS, bias=False) if qk_layernorm else None
    self.k_norm = nn.LayerNorm(self.head_dim, eps=LN_EPS, bias=False) if qk_layernorm else None
    self.ln_mlp = nn.LayerNorm(d, eps=LN_EPS, bias=False)
    self.wi = nn.Linear(d, mlp_ratio * d, bias=False)
    self.wo_mlp = nn.Linear(mlp_ratio * d, d, bias=False)

  def forward(self, x_BxLxD: torch.Tensor) -> torch.Tensor:
    b, length, d = x_BxLxD.shape
    h = self.ln_attn(x_BxLxD)
    split = lambda t: t.view(b, length, self.heads, self.head_dim)
    q, k, v = split(self.wq(h)), split(self.wk(h)), split(self.wv(h))
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q, k = _rope(q, self.rope_base).to(v.dtype), _rope(k, self.rope_base).to(v.dtype)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                         is_causal=True)
    x_BxLxD = x_BxLxD + self.wo(out.transpose(1, 2).reshape(b, length, d))
    return x_BxLxD + self.wo_mlp(F.gelu(self.wi(self.ln_mlp(x_BxLxD)), approximate="tanh"))


class Decoder(nn.Module):

  def __init__(self, vocab: int, d: int, layers: int, heads: int, mlp_ratio: int = 4,
               qk_layernorm: bool = True, rope_base: float = 10000.0):
    super().__init__()
    self.embed = nn.Embedding(vocab, d)
    self.blocks = nn.ModuleList(
        [Block(d, heads, mlp_ratio, qk_layernorm, rope_base) for _ in range(layers)])
    self.ln_final = nn.LayerNorm(d, eps=LN_EPS, bias=False)
    self.head = nn.Linear(d, vocab, bias=False)

  def forward(self, tokens_BxL: torch.Tensor) -> torch.Tensor:
    x = self.embed(tokens_BxL)
    for block in self.blocks:
      x = block(x)
    return self.head(self.ln_final(x)).float()


def loss_fn(logits_BxLxV: torch.Tensor, targets_BxL: torch.Tensor, z_loss: float) -> torch.Tensor:
  log_z = torch.logsumexp(logits_BxLxV, dim=-1)
  ce = F.cross_entropy(logits_BxLxV.flatten(0, 1), targets_BxL.flatten())
  return ce + z_loss * (log_z ** 2).mean()


def make_optimizer(model: nn.Module, opt_cfg, total_steps: int):
  """AdamW with independent decay under warm-up + cosine to an absolute min LR."""
  peak, floor, warmup = opt_cfg.peak_lr, opt_cfg.min_lr, opt_cfg.warmup_steps
  cuda = next(model.parameters()).is_cuda
  opt = torch.optim.AdamW(model.parameters(), lr=peak, betas=(opt_cfg.b1, opt_cfg.b2),
                          eps=opt_cfg.eps, weight_decay=opt_cfg.weight_decay / peak,
                          fused=cuda or None)  # the fused CUDA kernel: torch's fastest AdamW

  def shape(step: int) -> float:
    if step < warmup:
      return step / warmup
    t = min(step - warmup, total_steps - warmup) / max(total_steps - warmup, 1)
    return (floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * t))) / peak

  return opt, torch.optim.lr_scheduler.LambdaLR(opt, shape)


def copy_from_jax(model: Decoder, params) -> None:
  """Loads a JAX parameter tree (stability.model layout) into the torch model."""
  p = {k: v for k, v in params.items()}
  t = lambda x: torch.from_numpy(np.asarray(x, np.float32).copy())
  with torch.no_grad():
    model.embed.weight.copy_(t(p["embed"]["embedding"]))
    model.head.weight.copy_(t(p["head"]["kernel"]).T)
    model.ln_final.weight.copy_(t(p["ln_final"]["scale"]))
    for i, block in enumerate(model.blocks):
      bp = p[f"block_{i}"]
      d = block.wq.weight.shape[0]
      for name in ("wq", "wk", "wv"):
        getattr(block, name).weight.copy_(t(bp["attn"][name]["kernel"]).reshape(d, d).T)
      block.wo.weight.copy_(t(bp["attn"]["wo"]["kernel"]).reshape(d, d).T)
      if block.q_norm is not None:
        block.q_norm.weight.copy_(t(bp["attn"]["q_norm"]["scale"]))
        block.k_norm.weight.copy_(t(bp["attn"]["k_norm"]["scale"]))
      block.ln_attn.weight.copy_(t(bp["ln_attn"]["scale"]))
      block.ln_mlp.weight.copy_(t(bp["ln_mlp"]["scale"]))
      block.wi.weight.copy_(t(bp["mlp"]["wi"]["kernel"]).T)
      block.wo_mlp.weight.copy_(t(bp["mlp"]["wo"]["kernel"]).T)


def eval_loss(model: Decoder, tokens_BxL1: torch.Tensor, autocast_dtype=None) -> float:
  """Mean next-token cross-entropy (no z-loss), as `step.eval_step`."""
  with torch.no_grad(), _autocast(tokens_BxL1.device.type, autocast_dtype):
    return float(loss_fn(model(tokens_BxL1[:, :-1]), tokens_BxL1[:, 1:], 0.0))


def _autocast(device_type: str, dtype):
  return torch.autocast(device_type, dtype=dtype, enabled=dtype is not None)


def make_train_step(model: Decoder, opt, scheduler, *, z_loss: float, clip_norm: float,
                    autocast_dtype=None, grad_accum: int = 1):
  """One optimizer step on a [B, L+1] batch; returns the loss tensor (no host sync). With
  `grad_accum` > 1 the gradient is the mean over strided microbatches (rows a, a+A, ...), as in
  the JAX step."""
  device_type = next(model.parameters()).device.type

  def step(tokens_BxL1: torch.Tensor) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    total = torch.zeros((), device=tokens_BxL1.device)
    for a in range(grad_accum):
      micro_BxL1 = tokens_BxL1[a::grad_accum]
      with _autocast(device_type, autocast_dtype):
        logits = model(micro_BxL1[:, :-1])
      loss = loss_fn(logits, micro_BxL1[:, 1:], z_loss) / grad_accum
      loss.backward()
      total += loss.detach()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    opt.step()
    scheduler.step()
    return total

  return step


def benchmark(config, tokens_BxL1: np.ndarray, params, mode: str, *, vocab_size: int,
              steps: int, check_rows: int, keep_host_memory: bool = True,
              warmup_s: float = 2.0) -> dict:
  """Times the reference's train step (`mode`: eager | compile) on one batch, started from a
  JAX parameter tree: first-call and median step seconds, loss@0 on the first `check_rows`
  rows, and peak CUDA memory. On the GPU when there is one, with bf16 autocast when
  `config.model.dtype` is bfloat16. On a CPU, `keep_host_memory` sets malloc as the JAX side
  has it (stability/host_memory.py)."""
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cpu" and keep_host_memory:
    host_memory.keep_freed_memory()
  m = config.model
  model = Decoder(vocab_size, m.d_model, m.num_layers, m.num_heads, m.mlp_ratio,
                  qk_layernorm=m.qk_layernorm != "off", rope_base=m.rope_base)
  copy_from_jax(model, params)
  model.to(device)
  tokens = torch.from_numpy(tokens_BxL1.astype(np.int64)).to(device)
  autocast = torch.bfloat16 if m.dtype == "bfloat16" else None
  first_loss = eval_loss(model, tokens[:check_rows], autocast)
  opt, sched = make_optimizer(model, config.opt, config.train.steps)
  step = make_train_step(model if mode == "eager" else torch.compile(model), opt, sched,
                         z_loss=config.loss.z_loss, clip_norm=config.opt.clip_norm,
                         autocast_dtype=autocast, grad_accum=config.train.grad_accum)
  if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
  compile_s, step_s = timing.time_steps(lambda: step(tokens).item(), steps,  # .item() syncs
                                        warmup_s=warmup_s)
  mem = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else None
  return dict(step_s=step_s, compile_s=compile_s, first_loss=first_loss, mem_gib=mem)
