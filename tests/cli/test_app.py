import subprocess
import sys

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_help_lists_commands_without_heavy_imports() -> None:
    code = ("import sys; from cognimamba.cli.app import app; "
            "heavy = [m for m in ('torch', 'peft', 'transformers', 'datasets', 'textual') if m in sys.modules]; "
            "print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""  # `cogni --help` must not pay for torch or peft
    help_text = run_cli("--help").stdout
    for command in ("quickstart", "prepare", "train", "test-model", "config", "profiles", "plot"):
        assert command in help_text


@pytest.mark.slow
def test_user_errors_are_one_line_without_traceback(tmp_path) -> None:
    result = run_cli("train", "--data", str(tmp_path / "missing"), "--max-steps", "1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "cogni prepare" in lines[0]


@pytest.mark.slow
def test_debug_shows_traceback(tmp_path) -> None:
    result = run_cli("--debug", "train", "--data", str(tmp_path / "missing"), "--max-steps", "1")
    assert result.returncode != 0 and "Traceback" in result.stderr


@pytest.mark.slow
def test_python_dash_m_and_version() -> None:
    import cognimamba

    assert cognimamba.__version__
    assert run_cli("profiles").returncode == 0
