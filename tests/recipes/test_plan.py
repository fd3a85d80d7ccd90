"""Recipe plans: the shipped TOMLs resolve, SOURCE[:FORMAT][@WEIGHT] parses, and bad input is one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cognimamba.config.profiles import PROFILES
from cognimamba.errors import CogniError
from cognimamba.recipes.plan import SourceEntry, builtin_recipe, resolve_plan
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
