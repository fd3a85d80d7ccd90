"""`cogni eval --bfcl`: BFCL's own harness (bfcl-eval) against the server in this process, through the Responses API.

A scripted model that answers each case with BFCL's own ground truth scores every case it is let answer; cases
whose prompt the server refuses for context are counted, and scored wrong beside BFCL's accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("bfcl_eval", reason="bfcl-eval is not installed (pip install --no-deps bfcl-eval)")

from cognimamba.evaluation.bfcl import BfclOptions, load_harness, run_bfcl
from cognimamba.evaluation.bfcl_results import latest_bfcl
from cognimamba.serve.engine import ServedModel
from cognimamba.serve.local_server import serving_locally
from cognimamba.serve.state import ServerSettings
from tests.conftest import run_cli
from tests.serve.scripted import StoppingScript

CASES = 4  # per category
REFUSED = {"simple_python_1", "irrelevance_2"}  # their prompts count as too long for the context


def first_question(case: dict) -> str:
    return case["question"][0][-1]["content"]


def ground_truth_call(answer: dict) -> str:
    """BFCL's first acceptable call, written as the chat format writes a call (dots in names become underscores,
    as BFCL's tool conversion renames them; an argument whose first option is "" is left out)."""
    ((name, options),) = answer["ground_truth"][0].items()
    arguments = {key: values[0] for key, values in options.items() if values and values[0] != ""}
    return f'<tool_call>\n{json.dumps({"name": name.replace(".", "_"), "arguments": arguments})}\n</tool_call>'


class GroundTruthScript(StoppingScript):
    """Answers a simple_python case with its ground truth, anything else in words; REFUSED prompts are too long."""

    def __init__(self, answers: dict[str, str], refused_questions: list[str]) -> None:
        super().__init__(self.answer)
        self.answers, self.refused_questions = answers, refused_questions

    def answer(self, prompt: str) -> str:
        return next((call for question, call in self.answers.items() if question in prompt), "I cannot help.")

    def count_tokens(self, text: str) -> int:
        return 10**6 if any(question in text for question in self.refused_questions) else len(text)


@pytest.fixture(scope="module")
def ground_truth_model() -> ServedModel:
    harness = load_harness()
    cases = {case["id"]: case for category in ("simple_python", "irrelevance")
             for case in harness.utils.load_dataset_entry(category)[:CASES]}
    truths = harness.utils.load_ground_truth_entry("simple_python")[:CASES]
    answers = {first_question(cases[truth["id"]]): ground_truth_call(truth) for truth in truths}
    return ServedModel(GroundTruthScript(answers, [first_question(cases[case]) for case in REFUSED]), "scripted")


def test_bfcl_scores_the_served_model_and_counts_refusals(ground_truth_model: ServedModel, tmp_path: Path,
                                                          capfd: pytest.CaptureFixture[str]):
    with serving_locally(ground_truth_model, ServerSettings(api_key="key")) as url:
        summary = run_bfcl(url, "key", "scripted", BfclOptions(["simple_python", "irrelevance"], limit=CASES,
                                                               threads=2), tmp_path / "bfcl-raw")
    assert "Traceback" not in "".join(capfd.readouterr())  # a refusal is counted, not printed as BFCL's error block
    simple, irrelevance = summary["categories"]["simple_python"], summary["categories"]["irrelevance"]
    assert (simple["correct"], simple["total"], simple["refused_for_context"]) == (CASES - 1, CASES, 1)
    assert simple["refused_ids"] == ["simple_python_1"] and simple["errors"] == 0
    # BFCL scores the refused irrelevance case correct (no call came back); the summary says so.
    assert (irrelevance["accuracy"], irrelevance["refused_scored_correct"]) == (1.0, 1)
    assert irrelevance["accuracy_refused_as_wrong"] == (CASES - 1) / CASES
    assert summary["cases"] == 2 * CASES and summary["refused_for_context"] == 2
    assert summary["settings"]["endpoint"] == "/v1/responses" and summary["settings"]["model"] == "scripted"
    assert (tmp_path / "bfcl-raw" / "score").is_dir()  # BFCL's own files, kept beside the summary


def test_unknown_categories_are_one_line(tmp_path: Path):
    from cognimamba.errors import CogniError

    with pytest.raises(CogniError, match="Invalid test category name provided: simple_pythn"):
        run_bfcl("http://127.0.0.1:9", "key", "m", BfclOptions(["simple_pythn"]), tmp_path)


def test_cogni_eval_bfcl_saves_scores_that_test_model_shows(tiny_run: Path, cogni_home: Path, tmp_path: Path):
    out = tmp_path / "bfcl.json"
    result = run_cli("eval", str(tiny_run), "--bfcl", "simple_python,irrelevance", "--limit", "2",
                     "--batch-size", "2", "--device", "cpu", "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)["bfcl"]
    assert set(scores) == {"irrelevance", "simple_python"}
    assert all(entry["total"] == 2 for entry in scores.values())
    saved, summary = latest_bfcl(tiny_run)
    assert json.loads(out.read_text()) == summary
    assert saved.name.startswith("bfcl-") and (saved.parent / saved.stem / "result").is_dir()
    assert summary["seconds_per_case"] > 0 and summary["settings"]["threads"] == 2
    shown = run_cli("test-model", str(tiny_run), "--json")
    assert json.loads(shown.stdout)["bfcl"]["scores"] == scores
