"""Writes fake result folders in the training result format (docs/paper_notes.md#result-format)
for analysis tests."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Callable, Sequence

INIT_LOSS = 10.0


def config(size: str = "d64-L2", lr: float = 1e-2, **groups: dict) -> dict:
  """A resolved config as training writes it; `groups` update sections, e.g. opt={...}."""
  d_model, num_layers = (int(part[1:]) for part in size.split("-")[:2])
  cfg = {
      "model": {"size": size, "d_model": d_model, "num_layers": num_layers,
                "num_heads": max(1, d_model // 64), "mlp_ratio": 4, "qk_layernorm": "per_head",
                "attention": "softmax", "parametrization": "standard", "seq_len": 128,
                "vocab_size": 512},
      "opt": {"peak_lr": lr, "min_lr": 1e-5, "warmup_steps": 100, "eps": 1e-8,
              "weight_decay": 1e-4, "weight_decay_mode": "independent", "lr_scale": "none"},
      "loss": {"z_loss": 1e-4},
      "data": {"source": "synthetic", "batch_size": 8},
      "train": {"steps": 3000, "log_every": 100},
      "mesh": {"logical_axis_rules": [["batch", "data"]]},
  }
  for group, values in groups.items():
    cfg.setdefault(group, {}).update(values)
  return cfg


def write_jsonl(path: pathlib.Path, rows: Sequence[dict]) -> None:
  path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_run(root: pathlib.Path, name: str, *, size: str = "d64-L2", lr: float = 1e-2,
              status: str = "done", final_loss: float | None = 3.0,
              init_loss: float = INIT_LOSS, num_params: float | None = None,
              diverged_at_step: int | None = None,
              metrics: Sequence[dict] | Callable[[int], dict] | None = None,
              steps: Sequence[int] = range(0, 3001, 100),
              cfg: dict | None = None) -> pathlib.Path:
  """One run folder. `metrics` is a list of rows or a function step -> row (step is added)."""
  run = root / name
  run.mkdir(parents=True)
  cfg = cfg or config(size, lr)
  d, layers = cfg["model"]["d_model"], cfg["model"]["num_layers"]
  (run / "config.json").write_text(json.dumps(cfg))
  summary = {"name": name, "status": status, "init_eval_loss": init_loss,
             "final_eval_loss": final_loss, "diverged_at_step": diverged_at_step,
             "steps": 3000, "tokens": 3000 * 8 * 128, "wall_s": 10.0, "tokens_per_s": 1e5,
             "mfu": 0.1,
             "num_params": num_params if num_params is not None else 12 * layers * d * d}
  (run / "summary.json").write_text(json.dumps(summary))
  final = final_loss if final_loss is not None else math.nan
  write_jsonl(run / "eval.jsonl", [{"step": 0, "eval_loss": init_loss},
                                   {"step": 3000, "eval_loss": final}])
  if callable(metrics):
    metrics = [{"step": s, **metrics(s)} for s in steps]
  write_jsonl(run / "metrics.jsonl", metrics if metrics is not None else default_metrics(lr))
  return run


def default_metrics(lr: float) -> list[dict]:
  """A plausible training log: logits growing with step and LR, grad RMS shrinking with LR."""
  return [{"step": s, "train_loss": 10.0 - s / 500, "lr": lr,
           "attn_logit_max/block_0": 5.0 + lr * s, "output_logit/mean": -0.001 * s,
           "grad_rms/block_0/mlp/wi/kernel": 1e-5 / (1 + lr * s / 100),
           "update_rms/block_0/mlp/wi/kernel": 0.5}
          for s in range(0, 3001, 100)]


def write_sweep(root: pathlib.Path, points: Sequence[dict[str, Any]], *,
                experiment: str = "test_experiment",
                sensitivity: dict | None = None) -> pathlib.Path:
  """`sweep.json`; each point needs name, arm, size, lr."""
  root.mkdir(parents=True, exist_ok=True)
  spec = {"experiment": experiment, "scale": "cpu",
          "points": [{"overrides": {}, **p} for p in points],
          "sensitivity": sensitivity or {"rule": "single", "ranges": [[3e-4, 3e-1]]}}
  (root / "sweep.json").write_text(json.dumps(spec))
  return root


def run_name(size: str, lr: float, arm: str) -> str:
  return f"{size}_lr{lr:.0e}_{arm}"


def make_sweep(root: pathlib.Path, losses: dict[tuple[str, str], dict[float, Any]],
               **sweep_kwargs) -> pathlib.Path:
  """A sweep from {(arm, size): {lr: final loss | (status, final loss) | None}}.

  None lists the point in sweep.json without writing its folder (a run not yet run).
  """
  points = []
  for (arm, size), by_lr in losses.items():
    for lr, outcome in by_lr.items():
      name = run_name(size, lr, arm)
      points.append({"name": name, "arm": arm, "size": size, "lr": lr})
      if outcome is None:
        continue
      status, loss = outcome if isinstance(outcome, tuple) else ("done", outcome)
      write_run(root, name, size=size, lr=lr, status=status, final_loss=loss,
                diverged_at_step=1500 if status == "diverged" else None)
  return write_sweep(root, points, **sweep_kwargs)
