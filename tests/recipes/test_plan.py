"""Recipe plans: the shipped TOMLs resolve, SOURCE[:FORMAT][@WEIGHT] parses, and bad input is one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cognimamba.config.profiles import PROFILES
from cognimamba.errors import CogniError
from cognimamba.recipes.plan import SourceEntry, builtin_recipe, resolve_plan
from cognimamba.recipes.stages import tokenizer_sample
from tests.conftest import run_cli


def test_source_specs_parse_name_format_and_weight(tmp_path: Path) -> None:
    assert SourceEntry.parse("glaive200.json:sharegpt@0.5", "--chat") == SourceEntry("glaive200.json", "sharegpt", 0.5)
    assert SourceEntry.parse("synthetic-tools@0.3", "--chat") == SourceEntry("synthetic-tools", None, 0.3)
    assert SourceEntry.parse("alpaca", "--chat") == SourceEntry("alpaca", None, 1.0)
    odd = tmp_path / "a:b.json"  # an existing file keeps its colon
    odd.write_text("[]")
    assert SourceEntry.parse(f"{odd}@2", "--chat") == SourceEntry(str(odd), None, 2.0)


@pytest.mark.parametrize(("spec", "message"), [
    ("data.json:xml@0.5", "--chat data.json:xml@0.5: unknown format 'xml'; choose one of alpaca, sharegpt"),
    ("data.json@heavy", "weight 'heavy' is not a number; write SOURCE[:FORMAT][@WEIGHT]"),
    ("data.json@0", "weight 0 must be a positive number"),
    ("data.json@-1", "weight -1 must be a positive number"),
    ("@0.5", "no source; write SOURCE[:FORMAT][@WEIGHT]"),
])
def test_bad_source_specs_say_what_to_write(spec: str, message: str) -> None:
    with pytest.raises(CogniError, match=re.escape(message)):
        SourceEntry.parse(spec, "--chat")


def test_every_profile_ships_a_recipe_that_resolves(tmp_path: Path) -> None:
    for profile in PROFILES:
        plan = resolve_plan(profile, None, tmp_path, None, None, None, None)
        assert plan.recipe == builtin_recipe(profile) and plan.profile == profile
        assert plan.stage_seconds("pretrain") + plan.stage_seconds("chat") <= plan.budget_seconds
        assert [entry.source for entry in plan.chat_sources] == ["glaive", "alpaca", "synthetic-tools"]


def test_the_command_line_replaces_the_recipe_and_bad_values_are_refused(tmp_path: Path) -> None:
    plan = resolve_plan("cpu", None, tmp_path, None, ["synthetic-tools@0.3", "synthetic-chat@0.7"], "20m", None)
    assert [str(entry) for entry in plan.chat_sources] == ["synthetic-tools@0.3", "synthetic-chat@0.7"]
    assert (plan.stage_seconds("pretrain"), plan.stage_seconds("chat")) == (600, 480)
    assert any("synthetic-chat@0.7" in line for line in plan.describe())
    with pytest.raises(CogniError, match="--budget = 'soon' is not a duration"):
        resolve_plan("cpu", None, tmp_path, None, None, "soon", None)
    with pytest.raises(CogniError, match=r"missing\.json: no such file, and not a named chat dataset"):
        resolve_plan("cpu", None, tmp_path, None, ["missing.json@1"], None, None)
    with pytest.raises(CogniError, match="no built-in chat recipe"):
        builtin_recipe("tpu")
    broken = tmp_path / "mine.toml"
    broken.write_text(builtin_recipe("cpu").read_text().replace("share = 0.4", "share = 0.7"))
    with pytest.raises(CogniError, match=r"pretrain\.share \+ chat\.share = 1\.2 is more than the whole budget"):
        resolve_plan(None, broken, tmp_path, None, None, None, None)


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_a_bad_spec_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "recipe"
    result = run_cli("recipe", "chat", "--chat", "synthetic-tools@0.3", "--budget", "20m", "--out", str(out),
                     "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "chat_cpu.toml" in result.stderr and "pretraining 600s, chat fine-tuning 480s" in result.stderr
    assert "stages done: none" in result.stderr and not out.exists()  # nothing is written
    bad = run_cli("recipe", "chat", "--chat", "data.json:xml@0.5", "--dry-run")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == ["error: --chat data.json:xml@0.5: unknown format 'xml'; choose one of "
                                               "alpaca, sharegpt, messages, glaive"]


def test_the_tokenizer_sample_takes_the_chat_fraction_from_the_chat_data(tmp_path: Path) -> None:
    text = tmp_path / "stories.txt"
    text.write_text("\n\n".join(f"Once upon a time story {index} ended happily." for index in range(400)))
    mine = tmp_path / "mine.toml"
    shipped = builtin_recipe("cpu").read_text()
    plans = {}
    for fraction in (0.0, 0.5, 1.0):
        mine.write_text(re.sub(r"chat_fraction = [0-9.]+", f"chat_fraction = {fraction}", shipped)
                        .replace("sample_chars = 4000000", "sample_chars = 8000"))
        plans[fraction] = resolve_plan(None, mine, tmp_path, [str(text)], ["synthetic-tools@1"], None, None)
    samples = {fraction: list(tokenizer_sample(plan)) for fraction, plan in plans.items()}
    chat_chars = {key: sum(len(t) for t in sample if "<|im_start|>" in t) for key, sample in samples.items()}
    story_chars = {key: sum(len(t) for t in sample if t.startswith("Once")) for key, sample in samples.items()}
    assert chat_chars[0.0] == 0 and story_chars[1.0] == 0  # a TinyStories-only tokenizer, or a chat-only one
    assert 4000 <= chat_chars[0.5] < 6000 and 4000 <= story_chars[0.5] < 4100
    assert "tokenizer_chat_fraction" not in plans[0.5].identity()  # the default leaves older runs resumable
    assert plans[0.0].identity()["tokenizer_chat_fraction"] == 0.0  # a different tokenizer is a different recipe
    mine.write_text(shipped.replace("chat_fraction = 0.5", "chat_fraction = 1.5"))
    with pytest.raises(CogniError, match=r"tokenizer\.chat_fraction = 1\.5 must be in \[0, 1\]"):
        resolve_plan(None, mine, tmp_path, None, None, None, None)
