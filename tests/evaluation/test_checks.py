"""`cogni test-model`: the gradient check, and held-out loss on a text file read as `cogni prepare` reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

import cognimamba
from cognimamba.data.prepare import PrepareOptions, prepare_text
from cognimamba.evaluation import checks
from cognimamba.evaluation.checks import ModelReport, check_gradients, eval_on_data, eval_on_text


@pytest.mark.slow
def test_gradient_check_is_not_fooled_by_dropout(tiny_run: Path) -> None:
    """The blocks' residual dropout is functional (no nn.Dropout module): the check must switch it off too."""
    loaded = cognimamba.load(tiny_run)
    for block in loaded.model.layers:
        block.dropout = 1.0  # drops every residual branch while training
    loaded.model.train()
    report = ModelReport()
    check_gradients(loaded, report)
    (check,) = report.checks
    assert check.passed, check.detail
    assert loaded.model.training  # the mode it was in comes back


def test_eval_file_reads_text_as_prepare_does(tiny_run: Path, tiny_corpus: Path, tmp_path: Path) -> None:
    """--eval-file FILE scores what `prepare --val FILE` then `--data` scores: the same documents, separators and
    end-of-text tokens, and bits/byte over the same bytes (blank lines split documents; they are not text)."""
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("Tom had a red ball.\nHe liked it.\n\n\n\nMia saw a big dog.\n\nThe sun was warm.\n" * 6,
                        encoding="utf-8")
    prepared = prepare_text(PrepareOptions(source=str(tiny_corpus), val=str(held_out),
                                           tokenizer=tiny_run / "tokenizer.json", out=tmp_path / "data"),
                            Console(quiet=True))
    loaded = cognimamba.load(tiny_run)
    from_data, data_bits = eval_on_data(loaded, prepared.data_dir)
    from_file, file_bits, _ = eval_on_text(loaded, held_out)
    assert from_file.tokens == from_data.tokens
    assert from_file.loss == from_data.loss
    assert file_bits == data_bits


def test_eval_file_json_names_the_document_split(tiny_run: Path, tmp_path: Path) -> None:
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("Tom had a red ball.\n\nMia saw a big dog.\n\n" * 10, encoding="utf-8")
    report = checks.test_model(cognimamba.load(tiny_run), eval_file=held_out)
    assert report.metrics["eval_documents"] == 20
    assert report.metrics["eval_document_split"] == "blank lines"
