"""The house rules, checked on the source: layers point one way, no import cycle, small root, short functions, a map
that names every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cognimamba"
# Bottom to top: a subpackage imports only from itself and the ones before it.
LAYERS = ["errors", "system", "config", "model", "runs", "interop", "inference", "chat", "data", "train",
          "evaluation", "recipes", "serve", "cli"]
ROOT_MODULES = {"__init__.py", "__main__.py", "errors.py"}
MAX_FUNCTION_LINES = 100


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(path: Path, known: dict[str, Path]) -> set[str]:
    """Every cognimamba module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found.update(name if name in known else node.module for name in names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("cognimamba")}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported_modules(path, known) - {name} for name, path in known.items()}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_no_import_cycle() -> None:
    graph = import_graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, "import cycle: " + " -> ".join([*visiting[visiting.index(module):], module])
        visiting.append(module)
        for target in graph.get(module, ()):
            visit(target)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_layers_point_one_way() -> None:
    upward = []
    for module, targets in import_graph().items():
        source = layer_of(module)
        if source not in LAYERS:
            continue  # the package root and __main__ sit above everything
        for target in targets:
            layer = layer_of(target)
            if layer in LAYERS and LAYERS.index(layer) > LAYERS.index(source):
                upward.append(f"{module} -> {target}")
    assert not upward, "lower layers import upper ones:\n" + "\n".join(sorted(upward))


def test_every_subpackage_has_a_layer() -> None:
    subpackages = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert subpackages <= set(LAYERS), subpackages - set(LAYERS)


def test_the_root_holds_only_the_entry_points() -> None:
    assert {path.name for path in PACKAGE.glob("*.py")} == ROOT_MODULES


def is_typer_command(path: Path, node: ast.FunctionDef) -> bool:
    """A Typer signature (one Annotated option per line) is as long as its options: its body is what counts."""
    return path.parent.name == "commands" and node.name.endswith("_command")


def test_no_function_is_longer_than_a_screen_or_two() -> None:
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = node.body[0].lineno if is_typer_command(path, node) else node.lineno
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert not long, long


ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"


def backticked_in_rows(text: str) -> dict[str, set[str]]:
    """Each map row's first cell (`system/`, ...) to every backticked span in that row."""
    rows = {}
    for line in text.splitlines():
        cells = line.split("|")
        if line.startswith("| `") and len(cells) > 2:
            rows[cells[1].strip().strip("`").rstrip("/")] = set(re.findall(r"`([^`]+)`", "|".join(cells[2:])))
    return rows


def test_architecture_md_names_every_module() -> None:
    """A module is named when its subpackage's row in the map holds, in backticks, its path inside that subpackage
    without `.py`: `batching` for `inference/batching.py`, `tui/app` for `chat/tui/app.py`. A root module is
    named when `ARCHITECTURE.md` holds its file name in backticks (`errors.py`). `__init__.py` files need no name."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    rows = backticked_in_rows(text)
    unnamed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            continue
        in_root = len(parts) == 1
        if not (f"`{path.name}`" in text if in_root else "/".join(parts[1:]) in rows.get(parts[0], set())):
            unnamed.append("/".join(parts))
    assert not unnamed, "modules ARCHITECTURE.md does not name:\n" + "\n".join(unnamed)
