"""`cogni eval`: lm-eval on the run dir itself gives lm-eval's own `hf` figures on the run's export.

The tasks are local YAMLs over small JSON files in tests/evaluation/fixtures (their data_files are relative,
so lm-eval runs from that directory): a rolling log likelihood over TinyStories paragraphs, a multiple-choice
task and a greedy generation task.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from rich.console import Console

from cognimamba.cli.commands.eval import eval_command
from cognimamba.errors import CogniError
from cognimamba.evaluation.harness_results import (
    latest_results,
    metric_values,
    results_table,
    save_results,
    summarize,
)
from cognimamba.runs.loading import load_run
from cognimamba.runs.lora import LoraSettings
from cognimamba.runs.merge import merge_to_run
from cognimamba.train.entry import TrainOptions, train
from tests.conftest import run_cli, tiny_config

lm_eval = pytest.importorskip("lm_eval")

from cognimamba.evaluation.harness import HarnessOptions, RunLM, evaluate_run, score_batch  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
ROLLING, CHOICE, WORDS = "cogni_stories_rolling", "cogni_story_choice", "cogni_story_words"
TASKS = [ROLLING, CHOICE, WORDS]
RELATIVE = 1e-4


@pytest.fixture
def in_fixtures(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(FIXTURES)
    return FIXTURES


def sample_responses(results: dict[str, Any]) -> dict[str, list[Any]]:
    """Each task's per-document model answers (log likelihoods, or generated text), in document order."""
    return {task: [sample["resps"] for sample in sorted(samples, key=lambda s: s["doc_id"])]
            for task, samples in results["samples"].items()}


def evaluate(model: Any, log_samples: bool = True, **kwargs: Any) -> dict[str, Any]:
    manager = lm_eval.tasks.TaskManager(include_path=str(FIXTURES), include_defaults=False)
    return lm_eval.simple_evaluate(model=model, tasks=TASKS, task_manager=manager, log_samples=log_samples,
                                   verbosity="ERROR", **kwargs)


@pytest.fixture(scope="module")
def hf_reference(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """lm-eval's own `hf` backend on the tiny run's Hugging Face export (what a user could run today)."""
    export = tmp_path_factory.mktemp("export") / "hf"
    result = run_cli("export", str(tiny_run), "--format", "hf", "--out", str(export))
    assert result.returncode == 0, result.stderr
    # transformers 5 lets generation_config.json's max_new_tokens (the run's chat default) win over the
    # max_length lm-eval passes, so `hf` would generate past a task's max_gen_toks; leave lm-eval in charge.
    settings = json.loads((export / "generation_config.json").read_text())
    del settings["max_new_tokens"]
    (export / "generation_config.json").write_text(json.dumps(settings))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(FIXTURES)
        return evaluate("hf", model_args=f"pretrained={export},dtype=float32", batch_size=4, device="cpu")


def assert_close(ours: float, theirs: float) -> None:
    assert math.isclose(ours, theirs, rel_tol=RELATIVE, abs_tol=1e-6), (ours, theirs)


@pytest.mark.slow
def test_every_answer_matches_the_hf_backend_on_the_export(tiny_run: Path, hf_reference: dict[str, Any],
                                                           in_fixtures: Path) -> None:
    ours = sample_responses(evaluate(RunLM(load_run(tiny_run), torch.device("cpu"), batch_size=3)))
    theirs = sample_responses(hf_reference)
    for task in (ROLLING, CHOICE):
        for our_doc, their_doc in zip(ours[task], theirs[task], strict=True):
            for (our_answer,), (their_answer,) in zip(our_doc, their_doc, strict=True):
                if task == ROLLING:
                    assert_close(our_answer, their_answer)
                else:
                    assert_close(our_answer[0], their_answer[0])
                    assert our_answer[1] == their_answer[1]  # the continuation is greedy in both
    assert ours[WORDS] == theirs[WORDS]  # greedy text, stopped at the same string


@pytest.mark.slow
def test_cogni_eval_reports_the_hf_figures_and_keeps_them_beside_the_run(
        tiny_run: Path, hf_reference: dict[str, Any], tmp_path: Path, cogni_home: Path) -> None:
    out = tmp_path / "results.json"
    result = run_cli("eval", str(tiny_run), "--tasks", ",".join(TASKS), "--include-path", str(FIXTURES),
                     "--batch-size", "5", "--device", "cpu", "--json", "--out", str(out), cwd=FIXTURES)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    reference = metric_values(summarize(hf_reference, {}, lm_eval.__version__))
    assert set(figures) == set(TASKS)
    for task, metrics in reference.items():
        for metric, entry in metrics.items():
            assert_close(figures[task][metric]["value"], entry["value"])
    assert figures[ROLLING]["bits_per_byte"]["value"] > 0

    saved_path, saved = latest_results(tiny_run)
    assert saved_path.parent == tiny_run / "eval"
    assert saved == json.loads(out.read_text())
    assert saved["lm_eval_version"] == lm_eval.__version__
    assert saved["tasks"][CHOICE]["version"] == 1.0
    assert saved["settings"]["tasks"] == TASKS

    shown = run_cli("test-model", str(tiny_run), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["lm_eval"]["results"] == figures


@pytest.mark.slow
def test_a_lora_run_scores_as_its_merged_model(tiny_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    config = tiny_config("train.max_steps=3", "train.lr=1e-1", "train.warmup_steps=0", "train.eval_every=3",
                         "train.save_every=3", "train.eval_batches=1")
    train(TrainOptions(config=config, data=tiny_data, out=tmp_path / "lora", init_from=tiny_run,
                       lora=LoraSettings(rank=2), show_progress=False), Console(quiet=True))
    merged = merge_to_run(tiny_run, tmp_path / "lora", tmp_path / "merged")
    pairs = [([5, 6, 7], [8, 9]), ([10], [11, 12, 13])]
    as_lora = RunLM(load_run(tmp_path / "lora"), torch.device("cpu")).score_pairs(pairs, "lora")
    as_merged = RunLM(load_run(merged), torch.device("cpu")).score_pairs(pairs, "merged")
    as_base = RunLM(load_run(tiny_run), torch.device("cpu")).score_pairs(pairs, "base")
    for ours, theirs in zip(as_lora, as_merged, strict=True):
        assert_close(ours.log_likelihood, theirs.log_likelihood)
    assert any(abs(a.log_likelihood - b.log_likelihood) > 1e-3 for a, b in zip(as_lora, as_base, strict=True))


def test_batching_and_padding_leave_log_likelihoods_unchanged(tiny_run: Path) -> None:
    model = load_run(tiny_run).model
    pairs = [([1, 2, 3, 4, 5], [6, 7]), ([9], [10]), (list(range(20, 80)), list(range(80, 100)))]
    together = score_batch(model, pairs, 0, torch.device("cpu"))
    alone = [score_batch(model, [pair], 0, torch.device("cpu"))[0] for pair in pairs]
    for batched, single in zip(together, alone, strict=True):
        assert_close(batched.log_likelihood, single.log_likelihood)
    # 80 tokens do not fit a 64-token context: cut from the left, the continuation still scored whole.
    assert together[2].log_likelihood < 0


def test_rolling_windows_cover_every_token_once(tiny_run: Path) -> None:
    """A text longer than the context is scored in windows whose sum is each token's log likelihood once."""
    loaded = load_run(tiny_run)
    lm = RunLM(loaded, torch.device("cpu"), batch_size=2)
    text = (FIXTURES / "stories.jsonl").read_text().split("\n")[2]
    ids = lm.tok_encode(json.loads(text)["text"])
    assert len(ids) > lm.max_length  # several windows
    request = lm_eval.api.instance.Instance("loglikelihood_rolling", {}, (json.loads(text)["text"],), 0)
    (rolling,) = lm.loglikelihood_rolling([request])
    tokens = [lm.prefix_token_id, *ids]  # tokens[i + 1] is ids[i]
    expected = 0.0
    with torch.no_grad():
        for start in range(0, len(ids), lm.max_length):  # ids[start:end], after the context's worth before them
            end = min(start + lm.max_length, len(ids))
            inputs = tokens[max(0, end - lm.max_length):end]
            log_probs = loaded.model(torch.tensor([inputs]))[0].log_softmax(-1)[-(end - start):]
            expected += float(log_probs.gather(-1, torch.tensor(ids[start:end]).unsqueeze(-1)).sum())
    assert_close(rolling, expected)


def test_chat_template_renders_chatml_and_leaves_a_prefilled_reply_open(tiny_run: Path) -> None:
    lm = RunLM(load_run(tiny_run), torch.device("cpu"))
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert lm.apply_chat_template(history) == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                                               "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    prefilled = lm.apply_chat_template([*history, {"role": "assistant", "content": "Answer:"}],
                                       add_generation_prompt=False)
    assert prefilled.endswith("<|im_start|>assistant\nAnswer:")


@pytest.mark.parametrize("temperature", [0.005, -1.0])
def test_a_task_temperature_chat_refuses_is_refused_before_generating(tiny_run: Path, temperature: float) -> None:
    """Below 0.01 the logits overflow when divided (as chat refuses generation.temperature); below 0 is no
    temperature at all: one line naming the task, before any request generates."""
    lm = RunLM(load_run(tiny_run), torch.device("cpu"))
    generated = []
    lm.continue_text = lambda jobs: generated.append(jobs) or [""] * len(jobs)
    fine = {"until": ["\n"], "max_gen_toks": 4, "do_sample": True, "temperature": 0.7}
    requests = [lm_eval.api.instance.Instance("generate_until", {}, ("Once upon", settings), index, (WORDS, index, 1))
                for index, settings in enumerate([fine, {**fine, "temperature": temperature}])]
    with pytest.raises(CogniError, match=rf"^{WORDS}: gen_kwargs temperature = {temperature:g} .*use 0 for greedy "
                                         r"decoding or at least 0\.01$"):
        lm.generate_until(requests)
    assert generated == []
    greedy = {**fine, "do_sample": False, "temperature": temperature}  # lm-eval decodes greedily: nothing to check
    assert lm.generate_until([lm_eval.api.instance.Instance("generate_until", {}, ("Once upon", greedy), 0)]) == [""]


@pytest.mark.slow  # indexes lm-eval's own thousands of task files
def test_unknown_task_is_one_line_naming_it(tiny_run: Path) -> None:
    with pytest.raises(CogniError, match="no_such_task"):
        evaluate_run(load_run(tiny_run), torch.device("cpu"), HarnessOptions(tasks=["no_such_task"]))


def test_missing_local_data_is_one_line_with_the_way_out(tiny_run: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "lost.yaml").write_text((FIXTURES / "stories_rolling.yaml").read_text()
                                        .replace("cogni_stories_rolling", "cogni_lost").replace("stories.jsonl",
                                                                                                "missing.jsonl"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CogniError, match="dataset_path: json"):
        evaluate_run(load_run(tiny_run), torch.device("cpu"),
                     HarnessOptions(tasks=["cogni_lost"], include_path=tmp_path))


def test_summary_keeps_value_and_stderr_per_metric() -> None:
    results = {"results": {"arc_easy": {"alias": "arc_easy", "acc,none": 0.25, "acc_stderr,none": 0.01,
                                        "acc_norm,none": 0.3, "acc_norm_stderr,none": "N/A"}},
               "versions": {"arc_easy": 1.0}, "n-shot": {"arc_easy": 0},
               "higher_is_better": {"arc_easy": {"acc": True, "acc_norm": True}}}
    summary = summarize(results, {"tasks": ["arc_easy"]}, "0.4.13")
    assert metric_values(summary) == {"arc_easy": {"acc": {"value": 0.25, "stderr": 0.01},
                                                   "acc_norm": {"value": 0.3, "stderr": None}}}
    assert summary["tasks"]["arc_easy"]["version"] == 1.0 and summary["lm_eval_version"] == "0.4.13"
    console = Console(record=True, width=120)
    console.print(results_table(summary, "arc"))
    text = console.export_text()
    assert "arc_easy" in text and "0.2500" in text and "0.0100" in text and "N/A" in text and "↑" in text


def test_saved_results_come_back_newest_first(tmp_path: Path) -> None:
    first = save_results(tmp_path, {"tasks": {}, "n": 1})
    second = save_results(tmp_path, {"tasks": {}, "n": 2})
    assert first != second and first.parent == second.parent == tmp_path / "eval"
    assert latest_results(tmp_path) == (second, {"tasks": {}, "n": 2})
    assert latest_results(tmp_path / "elsewhere") is None


def test_without_lm_eval_the_command_names_the_pip_extra(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "lm_eval"
                        else find_spec(name, *rest))
    with pytest.raises(CogniError, match=r"pip install 'cognimamba\[eval\]'"):
        eval_command(tiny_run, tasks="arc_easy")
