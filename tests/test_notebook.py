"""analysis/paper_figures.ipynb: runs top to bottom on fake sweeps and draws what their data allows.

Each execution starts a real kernel (the running interpreter, through a kernelspec written to a
temporary JUPYTER_PATH) with `STABILITY_SWEEP_DIR` pointing at a sweep built by
tests/_runs_fixture.py. Nothing is written to the user's home: the Jupyter runtime folder and the
IPython profile live under tmp_path too.
"""

from __future__ import annotations

import json
import math
import pathlib
import re

import nbformat
import pytest
from ipykernel import kernelspec
from nbclient import NotebookClient

from tests._runs_fixture import config, run_name, write_run, write_sweep

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "analysis" / "paper_figures.ipynb"
KERNEL = "stability-notebook-test"
STEPS = range(0, 2001, 200)
FIGURE_CELLS = {  # cell id -> images it draws on a full sweep (2 arms, 2 sizes)
    "loss-vs-lr": 1, "sensitivity-vs-params": 1, "attn-logit": 2, "headline": 1,
    "output-logit": 2, "grad-rms": 2, "prediction": 1, "two-sweeps": 1}


# ---------------------------------------------------------------------------------------------
# Fake sweeps


def _metrics(arm: str, size: str, lr: float, diverged_at: int | None = None):
  """step -> a metrics row: logits grow with step, LR and width without qk-layernorm."""
  width = int(size.split("-")[0][1:])

  def row(step: int) -> dict:
    growth = lr * step * width / 64 if arm == "qkln-off" else lr * 10
    values = {"train_loss": 8.0 - step / 500, "lr": lr,
              "attn_logit_max/block_0": 5.0 + growth,
              "output_logit/mean": -0.1 * lr * step,
              "output_logit/log_z_mean": 2.0 + lr * step / 100,
              "grad_rms/block_0/mlp/wi/kernel": 1e-5 / (1 + lr * step / 100)}
    if diverged_at is not None and step > diverged_at:
      values = {key: math.nan for key in values}
    return values

  return row


def _write(root, arm, size, lr, *, status="done", loss=3.0, metrics=None, diverged_at=None):
  qk = "off" if arm == "qkln-off" else "per_head"
  name = run_name(size, lr, arm)
  write_run(root, name, size=size, lr=lr, status=status, final_loss=loss,
            diverged_at_step=diverged_at, steps=STEPS,
            cfg=config(size, lr, model={"qk_layernorm": qk}, train={"steps": 2000}),
            metrics=metrics if metrics is not None else _metrics(arm, size, lr, diverged_at))
  return {"name": name, "arm": arm, "size": size, "lr": lr}


def full_sweep(root: pathlib.Path) -> pathlib.Path:
  """2 arms × 2 sizes × 3 LRs; qkln-off d128-L2 diverges at the highest LR."""
  losses = {"qkln-on": {1e-3: 3.5, 1e-2: 3.1, 1e-1: 3.3},
            "qkln-off": {1e-3: 3.5, 1e-2: 3.4, 1e-1: 4.5}}
  points = []
  for arm, by_lr in losses.items():
    for size, shift in (("d64-L2", 0.0), ("d128-L2", -0.2)):
      for lr, loss in by_lr.items():
        if (arm, size, lr) == ("qkln-off", "d128-L2", 1e-1):
          points.append(_write(root, arm, size, lr, status="diverged", loss=None,
                               diverged_at=1000))
        else:
          points.append(_write(root, arm, size, lr, loss=loss + shift))
  return write_sweep(root, points, experiment="fig1_qk_layernorm")


def degenerate_sweep(root: pathlib.Path) -> pathlib.Path:
  """One size; a diverged run; a run without summary; runs with missing or partial metrics."""
  size = "d64-L2"
  points = [
      _write(root, "qkln-on", size, 1e-3, loss=3.5, metrics=[]),
      _write(root, "qkln-on", size, 1e-1, loss=3.3,
             metrics=[{"step": s, "train_loss": 5.0} for s in STEPS]),  # no logit metrics
      _write(root, "qkln-off", size, 1e-3, loss=3.6, metrics=[]),
      _write(root, "qkln-off", size, 1e-2, loss=3.4),
      _write(root, "qkln-off", size, 1e-1, status="diverged", loss=None, diverged_at=600),
  ]
  (root / points[3]["name"] / "summary.json").unlink()  # status unknown
  (root / points[0]["name"] / "metrics.jsonl").unlink()
  return write_sweep(root, points, experiment="fig1_qk_layernorm")


# ---------------------------------------------------------------------------------------------
# Running the notebook


@pytest.fixture
def jupyter_env(tmp_path, monkeypatch):
  """A kernelspec for this interpreter and Jupyter/IPython state folders, all under tmp_path."""
  jupyter = tmp_path / "jupyter"
  kernelspec.write_kernel_spec(jupyter / "kernels" / KERNEL)
  monkeypatch.setenv("JUPYTER_PATH", str(jupyter))
  monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
  monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
  monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
  monkeypatch.delenv("STABILITY_SWEEP_DIR", raising=False)
  return monkeypatch


def execute(monkeypatch, sweep: pathlib.Path | None, out_dir: pathlib.Path | None = None,
            **params) -> dict:
  """Runs the notebook on `sweep` (None: its default folder) from the repository root, as Jupyter
  would from a checkout, with `params` (and OUT_DIR) set after its parameters cell as papermill
  does; returns its cells by id. Fails with the tracebacks of every cell that raised."""
  if sweep is not None:
    monkeypatch.setenv("STABILITY_SWEEP_DIR", str(sweep))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  if out_dir is not None:
    params["OUT_DIR"] = str(out_dir)
  if params:
    at = [c.get("id") for c in nb.cells].index("parameters") + 1
    injected = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at, injected)
  client = NotebookClient(nb, timeout=120, startup_timeout=60, kernel_name=KERNEL,
                          allow_errors=True, resources={"metadata": {"path": str(REPO)}})
  client.execute()
  errors = [f"cell {cell.get('id')}: {out.ename}: {out.evalue}\n"
            + re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(out.traceback))  # no terminal colours
            for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.output_type == "error"]
  assert not errors, "\n\n".join(errors)
  return {cell.get("id"): cell for cell in nb.cells}


def text(cell) -> str:
  """Everything a cell printed or displayed as text (stdout, stderr, plain text, Markdown)."""
  parts = []
  for out in cell.get("outputs", []):
    if out.output_type == "stream":
      parts.append(out.text)
    elif out.output_type in ("display_data", "execute_result"):
      parts += [out.data.get("text/plain", ""), out.data.get("text/markdown", "")]
  return "\n".join(parts)


def images(cell) -> int:
  return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


# ---------------------------------------------------------------------------------------------
# Tests


def test_committed_notebook_opens_with_the_reference_figures():
  """Committed with the outputs of a run in a clean clone: the reference runs of Fig 1, drawn."""
  raw = json.loads(NOTEBOOK.read_text())
  nb = nbformat.reads(NOTEBOOK.read_text(), as_version=4)
  nbformat.validate(nb)
  assert raw["nbformat"] == 4
  assert nb.cells[0].cell_type == "markdown" and "Colab" in nb.cells[0].source
  code_cells = [c for c in nb.cells if c.cell_type == "code"]
  params = [c for c in code_cells if "parameters" in c.metadata.get("tags", [])]
  assert len(params) == 1 and params[0] is code_cells[0]
  for line in ('SWEEP_DIR = "results/demo"', 'FALLBACK_DIR = "reference/cpu/fig1_qk_layernorm"',
               "OUT_DIR = None", 'REPO_SOURCE = ""'):
    assert line in params[0].source
  assert '"google.colab" in sys.modules' in code_cells[1].source
  cells = {c.get("id"): c for c in code_cells}
  assert set(FIGURE_CELLS) <= set(cells)
  assert "drawing the committed reference runs" in text(cells["load"])
  assert "126 runs" in text(cells["load"])
  for cell_id in ("loss-vs-lr", "sensitivity-vs-params", "attn-logit", "headline"):
    assert images(cells[cell_id]) >= 1, cell_id
  assert not any(out.output_type == "error" for c in code_cells for out in c.outputs)


@pytest.mark.slow
def test_notebook_draws_every_figure_of_a_full_sweep(tmp_path, jupyter_env):
  sweep = full_sweep(tmp_path / "sweep")
  out = tmp_path / "figures"
  cells = execute(jupyter_env, sweep, out_dir=out)

  assert f"sweep folder: {sweep}" in text(cells["imports"])
  loaded = text(cells["load"])
  assert "12 runs: 11 done, 1 diverged" in loaded and "problems (0)" in loaded
  table = text(cells["sensitivity-table"])
  rows = [line.split() for line in table.splitlines()
          if line.strip().startswith(("qkln-on", "qkln-off"))]
  assert sorted((r[0], r[1]) for r in rows) == sorted(
      (arm, size) for arm in ("qkln-on", "qkln-off") for size in ("d64-L2", "d128-L2"))
  for cell_id, count in FIGURE_CELLS.items():
    assert images(cells[cell_id]) == count, (cell_id, text(cells[cell_id]))
    assert "Note:" not in text(cells[cell_id]), (cell_id, text(cells[cell_id]))
  fits = text(cells["prediction"])
  assert "crossing_params" in fits and "qkln-off" in fits and "qkln-on" not in fits
  for name in ("loss_vs_lr", "qk_layernorm_headline", "max_logit_vs_params"):
    assert (out / f"{name}.png").stat().st_size > 1000
    assert (out / f"{name}.svg").exists()
  assert len((out / "lr_sensitivity.csv").read_text().splitlines()) == 5
  assert "wrote 23 files" in text(cells["written"])  # 11 figures × (png, svg) + the CSV


@pytest.mark.slow
def test_notebook_skips_with_notes_on_a_degenerate_sweep(tmp_path, jupyter_env):
  cells = execute(jupyter_env, degenerate_sweep(tmp_path / "sweep"))

  loaded = text(cells["load"])
  assert "5 runs" in loaded and "1 unknown" in loaded and "1 diverged" in loaded
  assert "no readable summary.json" in loaded
  assert "qkln-off" in text(cells["sensitivity-table"])
  assert images(cells["loss-vs-lr"]) == 1
  for cell_id in ("sensitivity-vs-params", "grad-rms", "prediction"):
    assert images(cells[cell_id]) == 0 and "Note:" in text(cells[cell_id]), cell_id
  # The headline draws the runs that logged its metrics (the diverged one and the unknown one).
  headline = cells["headline"]
  assert images(headline) == 1 and "Note:" not in text(headline), text(headline)
  assert images(cells["attn-logit"]) == 2  # the diverged run and the run without a summary
  assert "needs at least two" in text(cells["sensitivity-vs-params"])
  assert "nothing written" in text(cells["written"])


@pytest.mark.slow
def test_notebook_runs_on_a_missing_folder(tmp_path, jupyter_env):
  cells = execute(jupyter_env, tmp_path / "no-such-sweep", FALLBACK_DIR=None)

  assert "0 runs" in text(cells["load"]) and "Note:" in text(cells["load"])
  assert "(no finished runs)" in text(cells["sensitivity-table"])
  assert sum(images(cell) for cell in cells.values()) == 0


@pytest.mark.slow
def test_notebook_without_runs_of_its_own_draws_the_reference(tmp_path, jupyter_env):
  """A clean clone or a new Colab runtime: no results/demo, so the committed Fig 1 runs."""
  cells = execute(jupyter_env, None, SWEEP_DIR=str(tmp_path / "results" / "demo"))

  loaded = text(cells["load"])
  assert "drawing the committed reference runs in `reference/cpu/fig1_qk_layernorm`" in loaded
  assert "126 runs" in loaded
  for cell_id in ("loss-vs-lr", "sensitivity-vs-params", "headline", "attn-logit"):
    assert images(cells[cell_id]) >= 1, (cell_id, text(cells[cell_id]))
  assert "the committed reference itself" in text(cells["two-sweeps"])


@pytest.mark.slow
def test_notebook_reads_the_committed_reference_runs(jupyter_env):
  """The reference results of `make reproduce` (reference/cpu/) open like any sweep."""
  cells = execute(jupyter_env, REPO / "reference" / "cpu" / "fig1_qk_layernorm")

  loaded = text(cells["load"])
  assert "126 runs" in loaded and "problems (0)" in loaded, loaded
  rows = [line.split() for line in text(cells["sensitivity-table"]).splitlines()
          if line.strip().startswith(("qkln-on", "qkln-off"))]
  assert len(rows) == 18  # 2 arms × 3 sizes × 3 seeds
  for cell_id in ("loss-vs-lr", "sensitivity-vs-params", "headline", "attn-logit"):
    assert images(cells[cell_id]) >= 1, (cell_id, text(cells[cell_id]))
