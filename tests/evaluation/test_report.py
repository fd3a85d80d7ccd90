"""The report card: RUN/report.md from what a run dir records, for runs, recipes and `cogni report`."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from rich.console import Console

from cognimamba.evaluation.report import LOSS_PNG, PLOT_HINT, REPORT_FILE, run_report, write_report, write_report_safely
from cognimamba.evaluation.saved_evals import save_chat_eval, saved_evals
from cognimamba.recipes.report import write_recipe_report
from tests.conftest import TINY_MODEL, run_cli

LM_EVAL = {"cognimamba_version": "0.1.0", "lm_eval_version": "0.4.9", "date": "2026-12-01T10:00:00+0000",
           "settings": {"limit": 20},
           "tasks": {"arc_easy": {"alias": "arc_easy", "version": 1.0, "n_shot": 0,
                                  "metrics": {"acc,none": {"metric": "acc", "filter": "none", "value": 0.3125,
                                                           "stderr": 0.02, "higher_is_better": True}}}}}
BFCL = {"kind": "bfcl", "bfcl_eval_version": "2026.3.23", "date": "2026-12-01T11:00:00+0000", "cases": 50,
        "seconds_per_case": 0.4, "settings": {"mode": "function-calling"},
        "categories": {"simple_python": {"accuracy": 0.1, "correct": 4, "total": 40, "refused_for_context": 0,
                                         "accuracy_refused_as_wrong": 0.1, "mean_latency_seconds": 0.52},
                       "irrelevance": {"accuracy": 0.9, "correct": 9, "total": 10, "refused_for_context": 2,
                                       "accuracy_refused_as_wrong": 0.7, "mean_latency_seconds": 0.31}}}
CHAT_EVAL = {"turn_taking_rate": 0.75, "turns": 8, "turns_taken": 6, "parse_rate": 0.5, "parsed_calls": 2,
             "tool_call_turns": 4, "examples": [{"reply": "not kept"}]}


def fake_run(path: Path, rows: int = 4) -> Path:
    """A run dir's records without weights: enough for every section but the sample."""
    path.mkdir(parents=True)
    config = {"format_version": 1, "profile": "cpu", "parameters": {"total": 106816, "non_embedding": 74048},
              "model": {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 128, "max_seq_len": 64,
                        "vocab_size": 512, "layer_pattern": "", "arch": "transformer"},
              "train": {"micro_batch_size": 4, "grad_accum_steps": 1, "lr": 0.003, "precision": "fp32",
                        "optimizer": "adamw"},
              "data": {"path": "/data/stories"},
              "data_meta": {"format": "text", "source": "stories.txt", "train_documents": 1140, "val_documents": 60,
                            "train_tokens": 48426, "val_tokens": 2555, "train_bytes": 139000, "vocab_size": 512},
              "provenance": {"command_line": "cogni train --data data --max-steps 30",
                             "code": {"version": "0.1.0", "git_commit": "abc123def456", "git_dirty": True},
                             "machine": {"device": "NVIDIA H100 80GB HBM3", "device_type": "cuda", "cpu_cores": 16,
                                         "threads": 16, "platform": "Linux", "python": "3.11.7", "torch": "2.5.0",
                                         "gpu": "NVIDIA H100 80GB HBM3", "gpu_memory_bytes": 80 * 1024**3},
                             "world_size": 1, "started": "2026-12-01 09:00:00 UTC"}}
    (path / "config.json").write_text(json.dumps(config))
    (path / "trainer_state.json").write_text(json.dumps({"step": 30, "tokens_seen": 7680, "elapsed": 95.0,
                                                         "last_val_loss": 5.9, "best_val_loss": 5.9,
                                                         "best_step": 30, "world_size": 1}))
    lines = [{"step": step, "train_loss": 6.5 - step / 10, "tokens_per_second": 1000.0 + step, "mfu": 0.25}
             for step in range(1, rows * 10, 10)]
    lines.append({"step": 30, "val_loss": 5.9, "val_perplexity": 365.0, "val_bits_per_byte": 3.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in lines) + '{"step": 31, "tra')
    return path


def test_a_report_tells_the_whole_story_of_a_run(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    report = run_report(run, sample=False)
    for section in ("# Report card: run", "## How it was made", "## Data", "## Model", "## Training",
                    "## Evaluations", "### Held-out loss"):
        assert section in report
    assert "`cogni train --data data --max-steps 30`" in report  # the command line, as recorded
    assert "git abc123def456 with uncommitted changes" in report
    assert "NVIDIA H100 80GB HBM3, 80.00 GiB" in report and "16 CPU cores" in report
    assert "1,140 train, 60 val" in report and "48,426 train" in report  # documents and tokens
    assert "106.82k" in report and "2 layers (attention), dim 64" in report
    assert "25.0%" in report  # MFU as training logged it
    assert "| val bits/byte | 3.000 |" in report
    assert "No saved evaluations" in report


def test_every_saved_evaluation_gets_its_section(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "run")
    (run / "eval").mkdir()
    (run / "eval" / "20261201-100000.json").write_text(json.dumps(LM_EVAL))
    (run / "eval" / "bfcl-20261201-100000.json").write_text(json.dumps(BFCL))
    (run / "eval" / "broken.json").write_text("{not json")  # a damaged file is left out, not fatal
    save_chat_eval(run, CHAT_EVAL, "held_out.jsonl", "turn-taking 0.75 (6/8)")
    assert [entry.kind for entry in saved_evals(run)] == ["lm-eval", "bfcl", "chat-eval"]
    assert "examples" not in json.loads((run / "eval" / "chat_eval.json").read_text())
    report = run_report(run, sample=False)
    assert "| arc_easy | acc | 0 | 0.3125 | 0.0200 |" in report and "limit 20" in report
    assert "| simple_python | 0.100 | 4/40 | 0 | 0.100 | 0.52 |" in report
    assert "| irrelevance | 0.900 | 9/10 | 2 | 0.700 | 0.31 |" in report  # refusals for context shown, not hidden
    assert "| turn-taking | 0.75 | 6/8 |" in report and "| tool call parses | 0.50 | 2/4 |" in report
    assert "No saved evaluations" not in report
    for headline in ("| lm-eval arc_easy acc | 0.3125 |", "| BFCL simple_python | 0.100 |",
                     "| chat eval: turn-taking | 0.75 |"):  # the latest of each kind, in the table at the top
        assert headline in report.split("## How it was made")[0]


def test_the_sample_of_a_run_that_cannot_load_is_skipped_in_one_line(tmp_path: Path) -> None:
    report = run_report(fake_run(tmp_path / "run"), sample=True)  # records, but no weights or tokenizer
    (line,) = [line for line in report.splitlines() if line.startswith("Skipped: the run did not load")]
    assert "missing tokenizer.json" in line and "## Training" in report


def test_without_matplotlib_the_report_says_how_to_get_the_png(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    run = fake_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    write_report(run, sample=False)
    assert PLOT_HINT.format(run=run) in (run / REPORT_FILE).read_text()
    assert not (run / LOSS_PNG).exists()


def test_a_report_that_cannot_be_written_is_one_warning(tmp_path: Path) -> None:
    console = Console(record=True, width=200)
    assert write_report_safely(tmp_path / "missing" / "run", console, sample=False) is None
    (line,) = console.export_text().strip().splitlines()
    assert line.startswith("report.md not written:")


@pytest.mark.slow
def test_a_trained_run_gets_a_png_and_a_greedy_sample(tiny_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = tmp_path / "tiny"
    shutil.copytree(tiny_run, run)
    report = write_report(run).read_text()
    assert (run / LOSS_PNG).read_bytes()[:4] == b"\x89PNG" and f"]({LOSS_PNG})" in report
    assert "## Sample (greedy" in report and "Once upon a time" in report
    assert "## How it was made" in report and "- **MFU**: " in report


@pytest.mark.slow
def test_a_recipe_report_has_one_section_per_stage_with_its_time(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "recipe"
    out.mkdir()
    shutil.copytree(tiny_run, out / "chat")
    figures = {"tokenizer": {"vocab_size": 512, "wall_seconds": 4.2},
               "data": {"pretrain_tokens": 48426, "chat_conversations": 300, "wall_seconds": 12.0},
               "chat": {"steps": 30, "val_loss": 1.5, "seconds": 60, "wall_seconds": 65.0},
               "eval": {**CHAT_EVAL, "summary": "turn-taking 0.75 (6/8)", "wall_seconds": 9.0}}
    (out / "recipe.json").write_text(json.dumps({"version": 1, "identity": {}, "figures": figures,
                                                 "done": ["tokenizer", "data", "chat", "eval"]}))
    report = write_recipe_report(out).read_text()
    assert "## 1. Tokenizer on pretraining text and chat data (4s)" in report
    assert "## 4. Chat fine-tuning (1m 05s)" in report and "### Training" in report  # the chat run nested
    if "](chat/report_loss.png)" not in report:  # linked from OUT/, where matplotlib drew it
        assert "pip install 'cognimamba[plot]'" in report
    assert "## 5. Chat eval on held-out conversations (9s)" in report and "| turn-taking | 0.75 | 6/8 |" in report
    assert "3. pretraining (not done)" in report
    assert (out / "chat" / REPORT_FILE).is_file()  # each trained run keeps its own report too
    result = run_cli("report", str(out), "--no-sample")  # `cogni report` knows a recipe's OUT from a run dir
    assert result.returncode == 0, result.stderr
    assert "## 5. Chat eval" in (out / REPORT_FILE).read_text() and "## Sample" not in (out / REPORT_FILE).read_text()


@pytest.mark.slow
def test_cogni_train_writes_the_report_and_cogni_report_rewrites_it(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    settings = [item for setting in TINY_MODEL for item in ("--set", setting)]
    result = run_cli("train", "--data", str(tiny_data), "--out", str(run), "--max-steps", "10", "--quiet", *settings)
    assert result.returncode == 0, result.stderr
    report = (run / REPORT_FILE).read_text()
    assert f"--out {run} --max-steps 10" in report and "## Sample" in report
    (run / "eval").mkdir()
    (run / "eval" / "20261201-100000.json").write_text(json.dumps(LM_EVAL))
    result = run_cli("report", str(run), "--no-sample", "--print")
    assert result.returncode == 0, result.stderr
    assert "| arc_easy | acc |" in result.stdout and "## Sample" not in (run / REPORT_FILE).read_text()
    missing = run_cli("report", str(tmp_path / "nowhere"))
    assert missing.returncode != 0 and "run dir not found" in missing.stderr and "Traceback" not in missing.stderr
