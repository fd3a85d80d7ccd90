from pathlib import Path

import pytest

from cognimamba.config.overrides import resolve_config, to_toml
from cognimamba.config.schema import FAMILY_PRESETS, Config, ModelConfig, parse_duration
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
        ("model.family=mistral", "model.family = 'mistral' is not allowed; choose one of llama, qwen2, qwen3, gemma3"),
        ("model.mlp=relu", "model.mlp = 'relu' is not allowed; choose one of swiglu, geglu_tanh"),
        ("model.norm_scheme=post", "model.norm_scheme = 'post' is not allowed; choose one of pre, sandwich"),
        ("model.rope_scaling=yarn", "model.rope_scaling = 'yarn' is not allowed; choose one of none, linear, llama3"),
        ("model.head_dim=33", "model.head_dim = 33 must be even for RoPE"),
        ("model.norm_weight_offset=2", "model.norm_weight_offset = 2.0 is too large; it must be <= 1.0"),
        ("model.embedding_scale=10", "choose one of none, sqrt_dim"),
        ("model.rope_scaling_factor=0.5", "model.rope_scaling_factor = 0.5 is too small; it must be >= 1.0"),
        ("model.qkv_bias=maybe", "model.qkv_bias: expected true or false"),
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


def test_a_family_sets_its_options_and_later_ones_win(tmp_path: Path) -> None:
    config = resolve_config("cpu", None, ["model.family=gemma3", "model.sliding_window=64"])
    model = config.model
    assert (model.family, model.mlp, model.norm_scheme, model.norm_weight_offset, model.embedding_scale) == (
        "gemma3", "geglu_tanh", "sandwich", 1.0, "sqrt_dim")
    assert model.qk_norm and model.full_attention_every == 6 and model.sliding_window == 64  # set after it
    assert model.dim == 256  # sizes stay the profile's
    # In a file the family goes first, wherever it is written: a saved run's every other field wins.
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\nqk_norm = false\nfamily = "qwen3"\n')
    assert resolve_config("cpu", toml, []).model.qk_norm is False
    assert Config.from_dict(config.to_dict()) == config


def test_every_family_preset_names_real_options() -> None:
    for family, preset in FAMILY_PRESETS.items():
        model = resolve_config("cpu", None, [f"model.family={family}"]).model
        assert {name: getattr(model, name) for name in preset} == preset


def test_head_dim_zero_is_dim_over_heads_and_set_frees_the_width() -> None:
    assert ModelConfig(dim=256, n_heads=8).attention_head_dim == 32
    model = resolve_config("cpu", None, ["model.n_heads=3", "model.n_kv_heads=1", "model.head_dim=64"]).model
    assert (model.attention_head_dim, model.q_dim, model.kv_dim) == (64, 192, 64)
    with pytest.raises(CogniError, match=r"model.dim \(256\) must be divisible by model.n_heads \(3\), or set "
                                         r"model.head_dim"):
        resolve_config("cpu", None, ["model.n_heads=3", "model.n_kv_heads=1"])


def test_cross_field_rules_of_the_family_options() -> None:
    with pytest.raises(CogniError, match=r"^model\.rope_high_freq_factor \(1\) must be above model\.rope_low"):
        resolve_config("cpu", None, ["model.rope_scaling=llama3", "model.rope_high_freq_factor=1"])
    with pytest.raises(CogniError, match=r"^model\.norm_scheme = sandwich is for attention layers"):
        resolve_config("cpu", None, ["model.norm_scheme=sandwich", "model.layer_pattern=AMAMAM"])
