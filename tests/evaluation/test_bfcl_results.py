"""BFCL's files summarized without bfcl-eval: scores per category, cases refused for context counted (BFCL scores a
refused irrelevance case as correct), the summary saved beside lm-eval's and shown by `cogni test-model`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cognimamba.errors import CogniError
from cognimamba.evaluation import bfcl
from cognimamba.evaluation.bfcl_results import (
    bfcl_line,
    bfcl_scores,
    bfcl_table,
    latest_bfcl,
    new_bfcl_stem,
    save_bfcl,
    summarize_bfcl,
)
from cognimamba.evaluation.harness_results import latest_results, save_results

# As BFCL records a failed case: its error's text (evaluation/bfcl.py names a refusal in it).
REFUSAL = ("Error during inference: context_length_exceeded: the prompt is 1100 tokens, 77 more than the model's "
           "context of 1024 allows with room for a reply; shorten it")
SERVER_ERROR = "Error during inference: Error code: 500 - generation failed (the server's log has the details)"


def write_lines(path: Path, entries: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(entry) + "\n" for entry in entries), encoding="utf-8")


def bfcl_files(root: Path) -> tuple[Path, Path]:
    """BFCL's result and score folders for one model, as its generation and checker write them."""
    results, scores = root / "result" / "m", root / "score" / "m"
    write_lines(results / "non_live" / "BFCL_v4_irrelevance_result.json", [
        {"id": "irrelevance_0", "result": "I cannot help.", "latency": 0.5},
        {"id": "irrelevance_1", "result": REFUSAL},
        {"id": "irrelevance_2", "result": [{"f": "{}"}], "latency": 1.5},
        {"id": "irrelevance_3", "result": REFUSAL}])
    write_lines(scores / "non_live" / "BFCL_v4_irrelevance_score.json", [
        {"accuracy": 0.75, "correct_count": 3, "total_count": 4},
        {"id": "irrelevance_2", "valid": False, "error_type": "irrelevance_error:decoder_success"}])
    write_lines(results / "live" / "BFCL_v4_live_simple_result.json", [
        {"id": "live_simple_0-0-0", "result": [{"g": '{"x": 1}'}], "latency": [[1.0, 3.0]]},  # multi-turn: nested
        {"id": "live_simple_1-1-0", "result": SERVER_ERROR}])
    write_lines(scores / "live" / "BFCL_v4_live_simple_score.json", [
        {"accuracy": 0.5, "correct_count": 1, "total_count": 2},
        {"id": "live_simple_1-1-0", "valid": False, "error_type": "ast_decoder:decoder_failed"}])
    return results, scores


def test_refused_cases_are_counted_and_scored_wrong_beside_bfcls_accuracy(tmp_path: Path):
    summary = summarize_bfcl(*bfcl_files(tmp_path), {"generation_seconds": 3.0}, "2026.3.23")
    irrelevance = summary["categories"]["irrelevance"]
    assert (irrelevance["accuracy"], irrelevance["correct"], irrelevance["total"]) == (0.75, 3, 4)  # BFCL's own
    assert irrelevance["refused_for_context"] == 2 and irrelevance["refused_scored_correct"] == 2
    assert irrelevance["accuracy_refused_as_wrong"] == 0.25
    assert irrelevance["refused_ids"] == ["irrelevance_1", "irrelevance_3"] and irrelevance["errors"] == 0
    assert irrelevance["mean_latency_seconds"] == 1.0
    live = summary["categories"]["live_simple"]
    assert live["errors"] == 1 and live["refused_for_context"] == 0 and live["accuracy_refused_as_wrong"] == 0.5
    assert live["mean_latency_seconds"] == 2.0
    assert summary["cases"] == 6 and summary["refused_for_context"] == 2 and summary["seconds_per_case"] == 0.5
    assert summary["kind"] == "bfcl" and summary["bfcl_eval_version"] == "2026.3.23"


def test_the_summary_is_saved_beside_lm_evals_and_read_back(tmp_path: Path):
    summary = summarize_bfcl(*bfcl_files(tmp_path / "raw"), {}, "x")
    lm_eval_file = save_results(tmp_path, {"tasks": {}})
    stem = new_bfcl_stem(tmp_path)
    saved = save_bfcl(tmp_path, stem, summary)
    assert saved.parent == lm_eval_file.parent == tmp_path / "eval" and saved.name.startswith("bfcl-")
    assert new_bfcl_stem(tmp_path) != stem
    assert latest_bfcl(tmp_path) == (saved, json.loads(saved.read_text()))
    assert latest_results(tmp_path)[0] == lm_eval_file  # each reader finds its own file
    assert latest_bfcl(tmp_path / "elsewhere") is None
    assert "refused_ids" not in bfcl_scores(summary)["irrelevance"]
    assert bfcl_line(summary) == ("irrelevance 0.750 (3/4), live_simple 0.500 (1/2); 2 refused for context")
    assert bfcl_table(summary, "t").row_count == 2


def test_missing_packages_are_named_with_what_to_install(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(bfcl, "is_installed", lambda module: module not in ("bfcl_eval", "faiss", "qwen_agent"))
    with pytest.raises(CogniError, match=r"pip install --no-deps bfcl-eval==\S+ && pip install 'cognimamba\[bfcl\]'"):
        bfcl.check_harness_installed()
    monkeypatch.setattr(bfcl, "is_installed", lambda module: module not in ("faiss", "qwen_agent"))
    with pytest.raises(CogniError, match="pip install qwen-agent"):
        bfcl.check_harness_installed()
    with pytest.raises(CogniError, match=r"memory_kv: BFCL's memory categories need pip install faiss-cpu==1\.11\.0 "
                                         r"\(install a CPU torch first"):
        bfcl.check_categories(["simple_python", "memory_kv"])
    with pytest.raises(CogniError, match="format_sensitivity scores prompting-mode models"):
        bfcl.check_categories(["format_sensitivity"])
    bfcl.check_categories(["simple_python", "irrelevance", "live_simple"])  # nothing beyond the harness


def test_cogni_eval_needs_tasks_or_categories_and_names_the_bfcl_install(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    from cognimamba.cli.commands.eval import eval_command

    with pytest.raises(CogniError, match=r"give --tasks .* or --bfcl"):
        eval_command(tmp_path)
    monkeypatch.setattr(bfcl, "is_installed", lambda module: module != "bfcl_eval")
    with pytest.raises(CogniError, match=r"pip install --no-deps bfcl-eval"):
        eval_command(tmp_path, bfcl="simple_python")


def test_test_model_shows_the_latest_bfcl_scores(tmp_path: Path):
    from types import SimpleNamespace

    from cognimamba.evaluation.checks import ModelReport, report_saved_bfcl

    report = ModelReport()
    report_saved_bfcl(SimpleNamespace(path=tmp_path), report)
    assert not report.checks and "bfcl" not in report.metrics  # never ran: nothing to show
    summary = summarize_bfcl(*bfcl_files(tmp_path / "raw"), {}, "x")
    saved = save_bfcl(tmp_path, new_bfcl_stem(tmp_path), summary)
    report_saved_bfcl(SimpleNamespace(path=tmp_path), report)
    (check,) = report.checks
    assert check.passed and check.detail == f"{bfcl_line(summary)} ({saved.name})"
    assert report.metrics["bfcl"]["scores"] == bfcl_scores(summary)
    assert report.metrics["bfcl"]["refused_for_context"] == 2
