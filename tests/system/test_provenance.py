"""How a run was made, as `train` records it: the command line, the code version, the machine."""

from __future__ import annotations

import torch

from cognimamba.system.provenance import CHECKOUT, code_version, command_line, machine, provenance
from cognimamba.system.version import VERSION


def test_command_line_reads_as_typed() -> None:
    assert command_line(["/venv/bin/cogni", "train", "--out", "runs/my run"]) == "cogni train --out 'runs/my run'"
    assert command_line(["/src/cognimamba/__main__.py", "plot", "r"]) == "cogni plot r"  # python -m cognimamba
    assert command_line(["script.py", "x"]) == "script.py x"  # train() called from someone's script


def test_code_version_names_the_commit_only_in_a_source_checkout() -> None:
    version = code_version()
    assert version["version"] == VERSION
    if (CHECKOUT / ".git").exists():
        assert len(version["git_commit"]) == 12 and isinstance(version["git_dirty"], bool)
    else:
        assert "git_commit" not in version


def test_machine_and_provenance() -> None:
    cpu = machine(torch.device("cpu"))
    assert cpu["device_type"] == "cpu" and cpu["threads"] == torch.get_num_threads() and cpu["torch"]
    recorded = provenance(torch.device("cpu"), world_size=2)
    assert recorded["world_size"] == 2 and recorded["command_line"] and recorded["started"]
