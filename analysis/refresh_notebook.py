"""Runs analysis/paper_figures.ipynb as a fresh clone would and saves it with its outputs.

  python -m analysis.refresh_notebook

From the repository root, with no sweep of its own (`SWEEP_DIR` is pointed at `results/demo`
only if that holds no runs, else at a folder that does not exist), so the notebook draws the
committed reference runs it falls back to: the outputs a reader sees when the page opens. Maintainers run it after the notebook, `analysis` or the
reference runs change. Needs Jupyter's kernel packages (`.[dev]`).
"""

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "analysis" / "paper_figures.ipynb"


def refresh(path: pathlib.Path = NOTEBOOK) -> int:
  """Executes the notebook in place; returns the number of cells that raised (0 to save it)."""
  import nbformat
  from nbclient import NotebookClient
  nb = nbformat.read(path, as_version=4)
  empty = "results/demo" if not (REPO / "results" / "demo").exists() else "results/no-runs-here"
  at = [c.get("id") for c in nb.cells].index("parameters") + 1
  nb.cells.insert(at, nbformat.v4.new_code_cell(f"SWEEP_DIR = {empty!r}"))
  NotebookClient(nb, timeout=300, allow_errors=True,
                 resources={"metadata": {"path": str(REPO)}}).execute()
  del nb.cells[at]
  errors = sum(out.output_type == "error" for c in nb.cells if c.cell_type == "code"
               for out in c.outputs)
  if errors:
    print(f"analysis.refresh_notebook: error: {errors} cell(s) raised; {path} is unchanged",
          file=sys.stderr)
    return errors
  nbformat.write(nb, path)
  print(f"wrote {path} with its outputs")
  return 0


if __name__ == "__main__":
  sys.exit(1 if refresh() else 0)
