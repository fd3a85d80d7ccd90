"""Every benchmark still starts: a rename inside cognimamba that breaks a script's imports fails here, not months
later on the machine that runs it. The quick test reads every script's imports of cognimamba, those inside
functions too (which --help never runs); the slow one runs each script's --help."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))
# The optional extras in pyproject.toml, as import names: a benchmark imports them where it uses them, so its
# --help answers without them. The child sees each as missing (None in sys.modules makes `import` fail).
OPTIONAL = ("transformers", "llama_cpp", "matplotlib", "openai", "httpx", "gguf", "lm_eval", "torchao", "fastapi",
            "uvicorn", "tensorboard", "wandb")
RUN_WITHOUT_OPTIONAL = f"""
import runpy, sys
sys.modules.update(dict.fromkeys({OPTIONAL!r}))
sys.argv = sys.argv[1:]
sys.path.insert(0, str(__import__("pathlib").Path(sys.argv[0]).parent))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def help_of(script: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUN_WITHOUT_OPTIONAL, str(script.relative_to(ROOT)), "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_there_are_benchmarks() -> None:
    assert len(SCRIPTS) > 5, SCRIPTS


def cognimamba_imports(script: Path) -> list[tuple[str, str | None]]:
    """(module, name) for every `import cognimamba...` and `from cognimamba... import name` anywhere in a script."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cognimamba"):
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names if alias.name.startswith("cognimamba")]
    return found


def submodule(package: str, name: str) -> bool:
    try:
        importlib.import_module(f"{package}.{name}")
    except ImportError:
        return False
    return True


def test_every_name_a_benchmark_imports_from_cognimamba_exists() -> None:
    missing = []
    for script in SCRIPTS:
        for module, name in cognimamba_imports(script):
            try:
                imported = importlib.import_module(module)
            except ImportError as error:
                missing.append(f"{script.name}: {module} ({error})")
                continue
            if name is not None and not hasattr(imported, name) and not submodule(module, name):
                missing.append(f"{script.name}: {module}.{name}")
    assert not missing, "\n".join(missing)


@pytest.mark.slow
def test_every_benchmark_answers_help_without_the_optional_extras() -> None:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # each child imports torch: seconds
        results = dict(zip(SCRIPTS, pool.map(help_of, SCRIPTS), strict=True))
    broken = [f"{script.name} (exit {result.returncode}):\n{result.stderr[-2000:]}"
              for script, result in results.items()
              if result.returncode != 0 or f"usage: {script.name}" not in result.stdout]
    assert not broken, "\n\n".join(broken)
