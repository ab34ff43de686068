"""The experiment configs: one file per figure or table of the paper, and base.py."""

import pathlib


def experiment_list() -> str:
  """One line per experiment file of configs/: its path and the first line of its docstring."""
  root = pathlib.Path(__file__).resolve().parent
  lines = []
  for path in sorted(root.glob("fig*.py")) + [root / "ablations.py"]:
    text = path.read_text() if path.exists() else ""
    first = text.split('"""', 2)[1].strip().splitlines()[0] if text.count('"""') >= 2 else ""
    lines.append(f"  configs/{path.name}: {first}")
  return "\n".join(lines)
