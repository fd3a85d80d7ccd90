from pathlib import Path

import pytest

from cognimamba.config.overrides import resolve_config, to_toml
from cognimamba.config.schema import Config, parse_duration
from cognimamba.errors import CogniError


def test_profile_then_file_then_overrides(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('profile = "4gb"\n[train]\nlr = 1e-3\nmax_steps = 50\n[model]\nqk_norm = true\n')
    config = resolve_config(None, toml, ["train.lr=3e-4", "data.seq_len_warmup=64,128"])
    assert config.profile == "4gb"
    assert config.model.dim == 768  # from the profile
    assert config.model.qk_norm is True  # from the file
    assert config.train.max_steps == 50
    assert config.train.lr == pytest.approx(3e-4)  # --set wins
    assert config.data.seq_len_warmup == [64, 128]


def test_toml_round_trip(tmp_path: Path) -> None:
    config = resolve_config("6gb", None, ["train.max_time=10m"])
    path = tmp_path / "out.toml"
    path.write_text(to_toml(config))
    assert resolve_config(None, path, []) == config


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "unknown config key 'train.lrr'; allowed: train.lr"),
        ("trian.lr=1", "section one of model, data, train, generation"),
        ("train.lr=fast", "train.lr: expected a number"),
        ("train.lr=5", "train.lr = 5.0 is too large; it must be <= 1.0"),
        ("train.micro_batch_size=0", "must be >= 1"),
        ("train.precision=fp8", "choose one of auto, fp32, bf16, fp16"),
        ("model.compile=yes", "unknown config key 'model.compile'"),
        ("train.compile=maybe", "expected true or false"),
        ("model.n_heads=5", "model.dim (256) must be divisible by model.n_heads (5)"),
        ("model.n_kv_heads=3", "must be a multiple of model.n_kv_heads"),
        ("train.max_time=soon", "not a duration"),
        ("lr", "expected section.field=value"),
    ],
)
def test_bad_values_name_the_field(override: str, message: str) -> None:
    with pytest.raises(CogniError, match=None) as error:
        resolve_config("cpu", None, [override])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_profile_lists_choices() -> None:
    with pytest.raises(CogniError, match="choose one of cpu, 4gb, 6gb, 8gb, 12gb, auto"):
        resolve_config("16gb", None, [])


def test_unknown_section_in_file(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("[optimizer]\nlr = 1\n")
    with pytest.raises(CogniError, match="unknown section 'optimizer'"):
        resolve_config(None, toml, [])


def test_durations() -> None:
    assert parse_duration("10m") == 600
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45") == 45
    assert parse_duration("2.5h") == 9000


def test_from_dict_validates() -> None:
    with pytest.raises(CogniError, match=r"model\.dim"):
        Config.from_dict({"model": {"dim": 0}})
