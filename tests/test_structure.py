"""The shape of the code: dependencies run one way, and every function is short enough to read.

  configs   -> stability
  launch    -> stability, configs, analysis
  analysis  -> the result format, size names and parameter counts of stability (no JAX)
  stability -> nothing of the others

The imports are read from the source (every `import` statement, also those inside functions), so
a lazy import counts as much as one at the top.
"""

import ast
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("stability", "configs", "launch", "analysis")
# What each package may import of the others.
ALLOWED = {
    "stability": set(),
    "configs": {"stability"},
    "launch": {"stability", "configs", "analysis"},
    "analysis": {"stability.result_format", "stability.sizes", "stability.flops"},
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


# The data package's insides (stability/data/*.py): launch/ goes through `stability.data`.
DATA_INSIDES = "stability.data."


def test_launch_and_the_tools_use_the_library_through_its_entry_points():
  users = modules("launch") + sorted((REPO / "stability").glob("*.py")) + sorted(
      (REPO / "stability" / "tools").glob("*.py"))
  bad = [f"{path.relative_to(REPO)}:{line} imports {name}"
         for path in users for line, name in imported_names(ast.parse(path.read_text()))
         if name.startswith(DATA_INSIDES)]
  bad += [f"{path.relative_to(REPO)} uses train.group_dir" for path in modules("launch")
          if "group_dir" in path.read_text()]
  assert not bad, "\n".join(bad)


def test_config_errors_are_raised_in_one_module():
  """Every ConfigError comes from stability/validation.py, where a reader finds all of them."""
  raisers = set()
  for package in PACKAGES:
    for path in modules(package):
      for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and "ConfigError(" in ast.unparse(node):
          raisers.add(str(path.relative_to(REPO)))
  assert raisers == {"stability/validation.py"}, raisers


def import_graph() -> dict[str, set[str]]:
  """Module -> the modules of the four packages it imports (lazy imports included)."""
  paths = {}
  for package in PACKAGES:
    for path in modules(package):
      name = ".".join(path.relative_to(REPO).with_suffix("").parts)
      paths[name.removesuffix(".__init__")] = path
  graph = {}
  for name, path in paths.items():
    graph[name] = set()
    for _, imported in imported_names(ast.parse(path.read_text())):
      while imported and imported not in paths:  # `from a.b import f` is module a.b
        imported = imported.rpartition(".")[0]
      if imported and imported != name:
        graph[name].add(imported)
  return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The import circles of `graph`: each a path that comes back to where it started."""
  found, done = [], set()

  def walk(module, path):
    if module in path:
      found.append(path[path.index(module):] + [module])
      return
    if module in done:
      return
    for imported in sorted(graph.get(module, ())):
      walk(imported, path + [module])
    done.add(module)

  for module in sorted(graph):
    walk(module, [])
  return found


def test_no_import_circle_anywhere():
  graph = import_graph()
  assert len(graph) > 60 and graph["launch.sweep"] >= {"configs.grid", "stability.flops"}
  assert not circles(graph), "\n".join(" -> ".join(c) for c in circles(graph))


def test_a_circle_is_found():
  assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
  assert circles({"a": {"b"}, "b": set()}) == []


def test_loading_any_config_imports_neither_flax_nor_jax():
  """A config and its check are plain Python: no Flax, no JAX, no model."""
  names = [f"configs.{p.stem}" for p in modules("configs") if p.stem != "__init__"]
  code = ("import sys\n" + "".join(f"import {n}\n" for n in names) +
          "import stability.validation, stability.step_memory\n"
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flax', 'jax')))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0 and len(names) > 10, out.stderr
  assert out.stdout.strip() == "[]", out.stdout[:500]


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


@pytest.mark.slow  # trains a tiny run
def test_the_config_takes_the_training_path_in_order():
  """`config` from `train_and_evaluate` enters each file of the route in docs/conventions.md
  in turn; the only returns are to train.py (the vocabulary, once the data is validated), to
  members.py (the finished-run check comes before the Run) and to result_format.py (each
  member's config.json)."""
  from tests import config_walk
  walk = config_walk.stays(config_walk.calls_taking(config_walk.tiny_config()))
  files = list(dict.fromkeys(path for path, _ in walk))
  assert files == ["stability/" + f for f in (
      "train.py", "validation.py", "data/__init__.py", "data/source.py", "members.py", "run.py",
      "result_format.py", "model.py", "optim.py", "sharding.py")]
  assert config_walk.returns(walk) == [
      "stability/train.py", "stability/members.py", "stability/result_format.py"]


def test_a_return_is_counted():
  from tests import config_walk
  walk = [("a.py", ["f"]), ("b.py", ["g"]), ("a.py", ["h"]), ("c.py", ["i"]), ("b.py", ["j"])]
  assert config_walk.returns(walk) == ["a.py", "b.py"]
