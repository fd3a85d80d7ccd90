"""Each .txt file is cut into documents by its own layout: the official TinyStories one (`<|endoftext|>` after
each story) or blank lines, without flags; meta.json and prepare's line say which rule each file got."""

import json
from pathlib import Path

import pytest

from cognimamba.data.data_dir import DataDir
from cognimamba.data.prepare import PrepareOptions, prepare_text
from cognimamba.data.sources import detect_separator, iter_documents, resolve_source
from tests.conftest import run_cli, shared_data

# Stories of more than one paragraph, so splitting at blank lines or at every line would miscount them.
STORIES = [
    "Tom had a red ball.\nHe threw it high.\nThe ball came down on the roof.",
    "Sue saw a big bird.\nThe bird sang a song.",
    "A little fish swam fast.\nIt found a shiny shell.\nIt was very happy.",
]
END = "<|endoftext|>"


def official_layout(path: Path, stories: list[str], repeat: int = 10) -> Path:
    """One paragraph a line, `<|endoftext|>` on its own line after each story (the last one ends a line)."""
    texts = stories * repeat
    body = "".join(f"{story}\n{END}\n" for story in texts[:-1]) + f"{texts[-1]}{END}\n"
    path.write_text(body, encoding="utf-8")
    return path


def blank_line_layout(path: Path, stories: list[str], repeat: int = 10) -> Path:
    """Stories separated by blank lines, as tinystories_valid.txt is."""
    path.write_text("\n\n".join(stories * repeat) + "\n", encoding="utf-8")
    return path


def prepare(tmp_path: Path, train: Path, val: Path | None = None, separator: str | None = None) -> DataDir:
    options = PrepareOptions(source=str(train), val=str(val) if val else None, val_fraction=None if val else 0.0,
                             vocab_size=300, separator=separator, out=tmp_path / "data")
    return prepare_text(options).data_dir


def test_official_layout_gives_one_document_per_story_without_flags(tmp_path: Path) -> None:
    data = prepare(tmp_path, official_layout(tmp_path / "train.txt", STORIES))
    assert data.meta["train_documents"] == 30
    assert data.document_split("train") == f"separator {END!r}"
    documents = list(iter_documents(resolve_source(str(tmp_path / "train.txt"))))
    assert documents == STORIES * 10


def test_blank_line_layout_still_splits_at_blank_lines(tmp_path: Path) -> None:
    data = prepare(tmp_path, blank_line_layout(tmp_path / "train.txt", STORIES))
    assert data.meta["train_documents"] == 30
    assert data.document_split("train") == "blank lines"


@pytest.mark.parametrize("train_layout, val_layout", [(official_layout, blank_line_layout),
                                                      (blank_line_layout, official_layout)])
def test_train_and_val_files_are_each_split_by_their_own_layout(tmp_path: Path, train_layout, val_layout) -> None:
    data = prepare(tmp_path, train_layout(tmp_path / "train.txt", STORIES), val_layout(tmp_path / "val.txt", STORIES,
                                                                                        repeat=2))
    assert (data.meta["train_documents"], data.meta["val_documents"]) == (30, 6)
    rules = {official_layout: f"separator {END!r}", blank_line_layout: "blank lines"}
    meta = json.loads((data.path / "meta.json").read_text())
    assert (meta["document_split"], meta["val_document_split"]) == (rules[train_layout], rules[val_layout])


def test_a_given_separator_splits_the_val_file_only_where_it_occurs(tmp_path: Path) -> None:
    train = official_layout(tmp_path / "train.txt", STORIES)
    data = prepare(tmp_path, train, blank_line_layout(tmp_path / "val.txt", STORIES, repeat=2), separator=END)
    assert (data.meta["val_documents"], data.document_split("val")) == (6, "blank lines")
    dashes = tmp_path / "dashes.txt"
    dashes.write_text("a one\n\nstill a\n---\nb two\n\nstill b\n---\nc three", encoding="utf-8")
    same = prepare(tmp_path, train, dashes, separator="---")
    assert (same.meta["val_documents"], same.document_split("val")) == (3, "separator '---'")


def test_end_of_text_inside_a_line_is_text_not_a_separator(tmp_path: Path) -> None:
    prose = tmp_path / "prose.txt"
    prose.write_text(f"The token {END} ends a story.\nIt is special.\n\nAnother note.\n", encoding="utf-8")
    assert detect_separator(prose) is None
    assert len(list(iter_documents(resolve_source(str(prose))))) == 2
    assert detect_separator(official_layout(tmp_path / "official.txt", STORIES)) == END


def test_an_older_data_dir_does_not_claim_a_val_rule(tmp_path: Path) -> None:
    data = prepare(tmp_path, blank_line_layout(tmp_path / "train.txt", STORIES))
    older = DataDir(data.path, {key: value for key, value in data.meta.items() if key != "text_data_version"})
    assert older.document_split("val") is None and older.document_split("train") == "blank lines"


def test_the_shared_files_give_one_document_per_story() -> None:
    train = resolve_source(str(shared_data("tinystories_train_2mib.txt")))
    assert train.separator == END and sum(1 for _ in iter_documents(train)) == 2316
    val = resolve_source(str(shared_data("tinystories_valid.txt")), separator=END, separator_if_present=True)
    assert val.separator is None and sum(1 for _ in iter_documents(val)) == 2580


@pytest.mark.slow
def test_cli_line_names_each_files_split(tmp_path: Path) -> None:
    train = official_layout(tmp_path / "train.txt", STORIES)
    val = blank_line_layout(tmp_path / "val.txt", STORIES, repeat=2)
    result = run_cli("prepare", str(train), "--val", str(val), "--vocab-size", "300", "--out", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    line = " ".join(result.stderr.split())
    assert f"train: 30 documents (separator {END!r})" in line
    assert "val: 6 documents (blank lines)" in line
