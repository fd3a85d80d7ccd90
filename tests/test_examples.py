import subprocess
import sys
from pathlib import Path

import pytest

from cognimamba.config.overrides import resolve_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    config = resolve_config(None, path, [])
    assert config.data.path


@pytest.mark.slow
def test_api_script_runs(tiny_run: Path) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "api_sample.py"), str(tiny_run), "Once upon"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "most likely next token" in result.stdout and "tokens/s]" in result.stdout
