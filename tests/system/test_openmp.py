"""How idle OpenMP workers wait: a short spin, then sleep, unless the user's environment says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cognimamba.system.openmp import SPIN_COUNT, set_openmp_waiting


@pytest.mark.parametrize(("exported", "expected"), [
    ({}, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": str(SPIN_COUNT)}),
    ({"GOMP_SPINCOUNT": "0"}, {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0"}),
    ({"OMP_WAIT_POLICY": "ACTIVE"}, {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": None}),  # libgomp's own count
])
def test_exported_values_win(monkeypatch, exported: dict[str, str], expected: dict[str, str | None]) -> None:
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in exported.items():
        monkeypatch.setenv(name, value)
    set_openmp_waiting()
    assert {name: os.environ.get(name) for name in expected} == expected


def test_the_cli_sets_them_before_torch_loads() -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = ("import sys; from cognimamba.cli import app; sys.argv = ['cogni', '--version']\n"
            "torch_before = 'torch' in sys.modules\n"
            "try:\n    app.main()\nexcept SystemExit:\n    pass\n"
            "import os; print(torch_before, os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.stdout.split()[-3:] == ["False", "PASSIVE", str(SPIN_COUNT)], result.stderr
