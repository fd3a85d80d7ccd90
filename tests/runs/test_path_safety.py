"""Nothing unsafe is loaded and no path escapes: pickles are refused, names from users or files stay in their dir."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cognimamba.errors import CogniError
from cognimamba.runs.checkpoints import latest_checkpoint
from cognimamba.runs.layout import OPTIMIZER, WEIGHTS
from cognimamba.runs.loading import load_run
from cognimamba.runs.manifest import verify_manifest, write_manifest
from cognimamba.runs.tensors import load_optimizer, read_weights
from cognimamba.system.fileio import safe_child
from tests.conftest import run_cli


class RunsCodeWhenUnpickled:
    """A pickle payload that creates a file when loaded: proof that a loader executed it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


# ------------------------------------------------------------------------------------------------- safe_child


@pytest.mark.parametrize("name", ["../outside", "a/../../outside", "/etc/passwd", "sub/../../../x", "", ".", "a/..",
                                  "bad\0name"])
def test_names_that_leave_the_directory_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(CogniError, match=r"escapes|not a usable file name"):
        safe_child(tmp_path / "root", name)


@pytest.mark.parametrize(("name", "inside"), [("run-1", "run-1"), ("nested/run", "nested/run"), ("a/../b", "b"),
                                              ("..hidden", "..hidden"), ("with space", "with space")])
def test_plain_names_resolve_inside(tmp_path: Path, name: str, inside: str) -> None:
    assert safe_child(tmp_path, name) == (tmp_path / inside).resolve()


def test_a_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(CogniError, match="escapes"):
        safe_child(root, "link/file")


@pytest.mark.slow
def test_a_profile_name_cannot_move_the_default_run_dir(tiny_data: Path, tmp_path: Path) -> None:
    """`cogni train` without --out names the run after the profile; `--set profile=../..` must not escape runs/."""
    home = tmp_path / "home"
    result = run_cli("train", "--data", str(tiny_data), "--set", "profile=../../../escaped", "--max-steps", "1",
                     "--quiet", env={"COGNI_HOME": str(home)})
    assert result.returncode == 2
    assert "escapes" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.glob("**/escaped*")) and not any(tmp_path.parent.glob("escaped*"))


def test_a_manifest_cannot_point_outside_its_directory(tiny_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    checkpoint = latest_checkpoint(run)
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"]["../../../secret.txt"] = {"size": 9, "sha256": "0" * 64}
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))
    assert "outside" in verify_manifest(checkpoint)
    assert latest_checkpoint(run) != checkpoint  # not trusted, so not resumed from


def test_sharded_index_of_an_imported_checkpoint_cannot_point_outside(tmp_path: Path) -> None:
    from cognimamba.interop.import_hf import read_hf_weights

    source = tmp_path / "hf"
    source.mkdir()
    save_file({"w": torch.zeros(2)}, str(tmp_path / "outside.safetensors"))
    (source / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../outside.safetensors"}}))
    with pytest.raises(CogniError, match="escapes"):
        read_hf_weights(source)


# ------------------------------------------------------------------------------------------------- pickles


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_pickle_named_model_safetensors_is_refused_and_never_unpickled(tiny_run: Path, tmp_path: Path,
                                                                         writer: str) -> None:
    run, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(tiny_run, run)
    payload = {"tok_embeddings.weight": RunsCodeWhenUnpickled(marker)}
    if writer == "torch.save":
        torch.save(payload, run / WEIGHTS)
    else:
        (run / WEIGHTS).write_bytes(pickle.dumps(payload, protocol=4))
    with pytest.raises(CogniError, match=r"is a pickle .*refused because loading one can run code"):
        load_run(run)
    result = run_cli("test-model", str(run))
    assert result.returncode == 2 and "is a pickle" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".ckpt"])
def test_pickle_weight_files_are_refused_by_name(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"pytorch_model{suffix}"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CogniError, match="pickles are refused"):
        read_weights(path)


@pytest.mark.slow
def test_an_optimizer_state_with_code_in_it_is_refused(tiny_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    """optimizer.pt is loaded with weights_only=True: tensors and containers only, even with a valid manifest."""
    run, marker = tmp_path / "run", tmp_path / "pwned"
    shutil.copytree(tiny_run, run)
    checkpoint = latest_checkpoint(run)
    honest = torch.load(checkpoint / OPTIMIZER, weights_only=True)
    torch.save({**honest, "torch_rng": RunsCodeWhenUnpickled(marker)}, checkpoint / OPTIMIZER)
    write_manifest(checkpoint, [WEIGHTS, OPTIMIZER, "trainer_state.json"])  # as a careful attacker would
    assert latest_checkpoint(run) == checkpoint
    with pytest.raises(CogniError, match="refused or unreadable optimizer state"):
        load_optimizer(checkpoint / OPTIMIZER)
    result = run_cli("train", "--out", str(run), "--data", str(tiny_data), "--resume", "--max-steps", "40", "--quiet",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr
    assert "never arbitrary pickles" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("header_length", [640, 896, 1152, 1408, 19280])  # begin 0x80 0x02..0x05, or "PK"
def test_safetensors_whose_header_length_looks_like_a_pickle_still_load(tmp_path: Path, header_length: int) -> None:
    from safetensors.torch import load_file, save_file

    from cognimamba.runs.tensors import read_weights

    path = tmp_path / "model.safetensors"
    state = {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    for padding in range(header_length):  # metadata grows the JSON header until its length is the one wanted
        save_file(state, str(path), metadata={"pad": "x" * padding})
        if int.from_bytes(path.read_bytes()[:8], "little") >= header_length:
            break
    assert int.from_bytes(path.read_bytes()[:8], "little") == header_length
    assert torch.equal(read_weights(path)["weight"], load_file(str(path))["weight"])
