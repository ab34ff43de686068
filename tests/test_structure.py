"""The shape of the code: dependencies run one way, and every function is short enough to read.

  configs   -> stability
  launch    -> stability, configs, analysis
  analysis  -> the result format only (stability.result_format: no JAX)
  stability -> nothing of the others

The imports are read from the source (every `import` statement, also those inside functions), so
a lazy import counts as much as one at the top.
"""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("stability", "configs", "launch", "analysis")
# What each package may import of the others.
ALLOWED = {
    "stability": set(),
    "configs": {"stability"},
    "launch": {"stability", "configs", "analysis"},
    "analysis": {"stability.result_format"},
}
MAX_FUNCTION_LINES = 60


def modules(package: str) -> list[pathlib.Path]:
  return sorted((REPO / package).rglob("*.py"))


def imported_names(tree: ast.AST) -> list[tuple[int, str]]:
  """(line, dotted name) of everything a module imports; `from a import b` gives `a.b`."""
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
  return out


def forbidden_imports(package: str) -> list[str]:
  """`path:line imports name` for each import of another package that `package` may not use."""
  allowed = ALLOWED[package]
  bad = []
  for path in modules(package):
    for line, name in imported_names(ast.parse(path.read_text())):
      top = name.split(".")[0]
      if top == package or top not in PACKAGES:
        continue
      if not any(name == a or name.startswith(a + ".") for a in allowed):
        bad.append(f"{path.relative_to(REPO)}:{line} imports {name}")
  return bad


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_run_one_way(package):
  bad = forbidden_imports(package)
  assert not bad, (f"{package} may import only {sorted(ALLOWED[package]) or 'none'} of "
                   f"{', '.join(PACKAGES)}:\n" + "\n".join(bad))


def test_the_import_walk_sees_lazy_imports():
  tree = ast.parse("def f():\n  from configs import base\n  import launch.sweep\n")
  assert imported_names(tree) == [(2, "configs.base"), (3, "launch.sweep")]


def function_lengths() -> list[tuple[int, str]]:
  """(lines, `path:line name`) of every function and method, longest first."""
  out = []
  for package in PACKAGES:
    for path in modules(package):
      for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          lines = node.end_lineno - node.lineno + 1
          out.append((lines, f"{path.relative_to(REPO)}:{node.lineno} {node.name}"))
  return sorted(out, reverse=True)


def test_no_function_is_longer_than_a_screen():
  lengths = function_lengths()
  assert len(lengths) > 300  # the walk sees the code
  long = [f"{where}: {lines} lines" for lines, where in lengths if lines > MAX_FUNCTION_LINES]
  assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)
