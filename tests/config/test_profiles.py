import pytest
import torch

from cognimamba.config.profiles import (
    BUDGET_GIB,
    GIB,
    PROFILES,
    estimate_memory,
    get_profile,
    parameter_counts,
    preset_on_profile,
)
from cognimamba.model.transformer import LanguageModel, num_parameters
from tests.conftest import run_cli


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_builds_a_model(name: str) -> None:
    config = get_profile(name)
    with torch.device("meta"):  # shapes only: the 12gb model would take seconds to initialise for real
        model = LanguageModel(config.model)
    assert num_parameters(model) == parameter_counts(config.model)
    logits = model(torch.zeros((1, 8), dtype=torch.long, device="meta"))
    assert logits.shape == (1, 8, config.model.vocab_size)


def test_cpu_profile_is_small() -> None:
    total, _ = parameter_counts(get_profile("cpu").model)
    assert 1_000_000 <= total <= 6_000_000


@pytest.mark.parametrize("name", list(BUDGET_GIB))
def test_gpu_profiles_fit_their_budget_with_margin(name: str) -> None:
    config = get_profile(name)
    estimate = estimate_memory(config)
    assert estimate.runtime >= 0.5 * GIB  # CUDA context and workspace are counted
    assert estimate.total <= BUDGET_GIB[name] * GIB
    assert estimate.activations_checkpointed < estimate.activations


def test_design_starting_points() -> None:
    four = get_profile("4gb")
    assert (four.model.dim, four.model.n_layers, four.model.n_heads, four.model.n_kv_heads, four.model.ffn_dim) == (
        768, 8, 12, 3, 2048)
    twelve = get_profile("12gb")
    assert (twelve.model.dim, twelve.model.n_layers, twelve.model.n_kv_heads, twelve.model.max_seq_len) == (
        1280, 16, 5, 1024)
    assert get_profile("6gb").train != get_profile("8gb").train


@pytest.mark.parametrize("native", [True, False])
def test_cpu_profile_trains_in_bf16_where_the_cpu_has_it(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    from cognimamba.system import hardware

    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    assert get_profile("cpu").train.precision == ("bf16" if native else "fp32")


def test_auto_is_cpu_without_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    assert get_profile("auto").profile == "cpu"


@pytest.mark.slow
def test_profiles_command_prints_table() -> None:
    result = run_cli("profiles")
    assert result.returncode == 0, result.stderr
    for name in PROFILES:
        assert name in result.stdout
    assert "over" not in result.stdout


@pytest.mark.slow
def test_config_command_writes_toml(tmp_path) -> None:
    target = tmp_path / "six.toml"
    result = run_cli("config", "--profile", "6gb", "--set", "train.lr=1e-4", "--write", str(target))
    assert result.returncode == 0, result.stderr
    from cognimamba.config.overrides import resolve_config

    config = resolve_config(None, target, [])
    assert config.profile == "6gb" and config.train.lr == pytest.approx(1e-4)
    printed = run_cli("config", "--profile", "cpu")
    assert "[model]" in printed.stdout and "dim = " in printed.stdout


def test_gemma3_270m_is_a_named_model_with_its_memory_on_each_gpu_profile() -> None:
    """268M parameters, 168M of them the 262k-token embedding: AdamW's fp32 state alone is over 4 GB. With a
    tokenizer of 32k tokens (a run takes the vocabulary of the one it trains with) the 4 GB card fits it too."""
    config = get_profile("gemma3-270m")
    assert config.profile == "gemma3-270m" and config.model.family == "gemma3"
    assert parameter_counts(config.model) == (268_098_176, 100_326_016)
    with torch.device("meta"):
        model = LanguageModel(config.model)
    assert num_parameters(model) == parameter_counts(config.model)
    assert preset_on_profile("gemma3-270m", "4gb") is None
    for name, budget in BUDGET_GIB.items():
        for vocab_size in (None, 32_000):
            fitted = preset_on_profile("gemma3-270m", name, vocab_size)
            if fitted is None:
                continue
            assert estimate_memory(fitted, on_gpu=True).total <= budget * GIB
            assert fitted.model.max_seq_len >= 256 and fitted.model.head_dim == 256
    assert preset_on_profile("gemma3-270m", "4gb", vocab_size=32_000) is not None
