"""The optimizer update alone on the d128-L2 parameter tree (23 tensors): clipping, Adam, weight
decay, the LR, the update applied, and the step's two global norms, jitted as one program with
the parameters and state donated; ms per call, median of 300 calls after 50. `flat` is the same
chain under `optax.flatten` (one vector instead of 23 tensors).

  python docs/measured/bf16-dots-2026-12-08/optimizer.py
"""
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from stability import config_schema, diagnostics, run as run_lib, sizes


def params_of_d128_l2():
  c = config_schema.default_config()
  sizes.apply(c.model, "d128-L2")
  c.data.source, c.model.seq_len, c.data.batch_size = "synthetic", 128, 16
  c.data.synthetic.vocab_size = 259
  return run_lib.Run([c], 259).init_state(0).params


def median_ms(tx, params, grads):
  def update(params, grads, state):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    return params, state, diagnostics.global_norm(grads), diagnostics.global_norm(params)

  update = jax.jit(update, donate_argnums=(0, 2))
  params = jax.tree_util.tree_map(jnp.copy, params)
  state = tx.init(params)
  for _ in range(50):
    params, state, *_ = update(params, grads, state)
  times = []
  for _ in range(300):
    t = time.perf_counter()
    params, state, _, norm = update(params, grads, state)
    jax.block_until_ready(norm)
    times.append(time.perf_counter() - t)
  return statistics.median(times) * 1e3


def main():
  params = params_of_d128_l2()
  grads = jax.tree_util.tree_map(lambda p: p * 1e-3 + 1e-4, params)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(),
                   optax.add_decayed_weights(1e-4), optax.scale_by_learning_rate(1e-3))
  print(f"{len(jax.tree_util.tree_leaves(params))} tensors")
  for _ in range(2):
    print(f"tree {median_ms(tx, params, grads):.2f} ms, "
          f"flat {median_ms(optax.flatten(tx), params, grads):.2f} ms")


if __name__ == "__main__":
  main()
