"""The package's shape: short modules, no import cycles, and the run config
(a `ConfigDict`) read only where a run config becomes typed configs.

These read the source with `ast`; nothing is imported.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "electra_jax"
MAX_LINES = 450

# The modules that may see the run config (docs/architecture.md): entry
# points, the two loops with their config resolution, `train.py` (the one
# place a pretraining config becomes `ModelConfig`/`StepConfig`/
# `OptimizerConfig`), reading a finished run's record (`pretrained.py`) and
# the config defaults. Everything below takes typed values.
CONFIG_READERS = {
    "electra_jax.main", "electra_jax.loop", "electra_jax.train",
    "electra_jax.defaults", "electra_jax.benchmark", "electra_jax.pretrained",
    "electra_jax.finetune.__main__", "electra_jax.finetune.train",
    "electra_jax.finetune.restore",
}


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def _imports(path: pathlib.Path, modules: dict[str, pathlib.Path]
             ) -> set[str]:
  """Every module of the package or outside it that `path` imports, at any
  depth (a function-level import is a dependency too)."""
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      for alias in node.names:
        name = f"{node.module}.{alias.name}"
        # `from electra_jax import train` imports a module; `from
        # electra_jax.convert import load_transformers` a package's name.
        found.add(name if name in modules else node.module)
  return found


def _graph() -> dict[str, set[str]]:
  modules = _modules()
  return {name: {m for m in _imports(path, modules)
                 if m in modules and m != name and m != "electra_jax"}
          for name, path in modules.items()}


def test_no_module_is_longer_than_the_house_limit():
  long = {name: n for name, path in _modules().items()
          if (n := len(path.read_text().splitlines())) > MAX_LINES}
  assert not long, f"over {MAX_LINES} lines: {long}"


def test_no_import_cycles():
  graph = _graph()
  state, cycles = {}, []

  def visit(node, stack):
    state[node] = "open"
    for dep in sorted(graph[node]):
      if state.get(dep) == "open":
        cycles.append(stack[stack.index(dep):] + [dep])
      elif dep not in state:
        visit(dep, stack + [dep])
    state[node] = "done"

  for name in sorted(graph):
    if name not in state:
      visit(name, [name])
  assert not cycles, cycles
  # The walk sees the real edges (a broken walk would find no cycles).
  assert "electra_jax.model" in graph["electra_jax.train"]
  assert "electra_jax.nn.linear" in graph["electra_jax.model"]


def test_run_config_is_read_only_above_the_modules():
  modules = _modules()
  readers = {name for name, path in modules.items()
             if "ml_collections" in _imports(path, modules)}
  assert readers <= CONFIG_READERS, sorted(readers - CONFIG_READERS)
  assert "electra_jax.train" in readers  # The walk finds real imports.


def test_model_and_layers_never_see_the_run_config_or_the_data():
  graph = _graph()
  below = ("electra_jax.model", "electra_jax.nn", "electra_jax.objective",
           "electra_jax.optimizer", "electra_jax.sharding")
  for name, deps in graph.items():
    if name.startswith(below):
      assert not {d for d in deps if d.startswith("electra_jax.data")
                  or d in ("electra_jax.loop", "electra_jax.train",
                           "electra_jax.defaults")}, (name, deps)


# Where a local file is meant (a path never from a user, or a build that
# the bucket path stages locally first); everywhere else a user path goes
# through etils.epath, so gs:// works.
_LOCAL_BY_DESIGN = {
    # Builds in a local directory; gs:// output is staged, then uploaded.
    ("electra_jax.data.preprocess", "_write_json"),
    ("electra_jax.data.preprocess", "_prepare_tokenizer"),
    ("electra_jax.data.preprocess", "preprocess"),
    ("electra_jax.data.preprocess", "_preprocess_to_bucket"),
    ("electra_jax.data.preprocess", "_finish"),
    ("electra_jax.data.packing", "close"),  # ArrayRecordWriter: local.
    ("electra_jax.data.tokenization", "train_sentencepiece"),
    # Reads installed packages' files; its text is gathered locally.
    ("electra_jax.data.default_corpus", "_walk"),
    ("electra_jax.data.default_corpus", "_docstrings"),
    ("electra_jax.data.default_corpus", "_read_text"),
    ("electra_jax.data.default_corpus", "iter_raw_documents"),
    ("electra_jax.data.default_corpus", "write_corpus"),
    ("electra_jax.data.default_corpus", "build_default_dataset"),
    ("electra_jax.data.text_sources", "_glob"),  # The local branch.
    ("electra_jax.reporting", "close"),  # Its local copy of the events.
    ("electra_jax.presets", "resolve"),  # A config is a local .py file.
}
_LOCAL_CALLS = {"open", "os.path.abspath", "os.path.exists",
                "os.path.isdir", "os.path.isfile", "os.path.getsize",
                "os.makedirs", "os.replace", "os.remove", "os.listdir",
                "shutil.copyfile", "shutil.copy", "shutil.rmtree",
                "glob.glob"}


def _call_name(node: ast.Call) -> str:
  parts, f = [], node.func
  while isinstance(f, ast.Attribute):
    parts.append(f.attr)
    f = f.value
  if not isinstance(f, ast.Name):  # e.g. `epath.Path(p).open()`.
    return ""
  parts.append(f.id)
  return ".".join(reversed(parts))


def test_user_paths_go_through_epath():
  found = set()
  for name, path in _modules().items():
    def visit(node, function):
      for child in ast.iter_child_nodes(node):
        inner = (child.name if isinstance(
            child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function)
        if isinstance(child, ast.Call) and _call_name(child) in _LOCAL_CALLS:
          found.add((name, function, _call_name(child)))
        visit(child, inner)
    visit(ast.parse(path.read_text()), "<module>")
  unexpected = sorted(f for f in found if f[:2] not in _LOCAL_BY_DESIGN)
  assert not unexpected, unexpected
  stale = _LOCAL_BY_DESIGN - {f[:2] for f in found}
  assert not stale, sorted(stale)  # Keep the list exact.
  assert ("electra_jax.data.text_sources", "_glob", "glob.glob") in found
