import json
from pathlib import Path

import numpy as np
import pytest

from cognimamba.data.data_dir import DataDir
from cognimamba.data.prepare import PrepareOptions, prepare_text
from cognimamba.data.sources import split_documents
from cognimamba.errors import CogniError
from cognimamba.model.tokenizer import decode, load_tokenizer
from tests.conftest import run_cli, shared_data

STORIES = ["The cat sat on the mat.\nIt was happy.", "A dog ran in the park. 🐕", "Birds sing songs in the morning."]


def write_txt(path: Path, documents: list[str], repeat: int = 20) -> Path:
    path.write_text("\n\n".join(documents * repeat), encoding="utf-8")
    return path


def test_txt_round_trips_through_tokens(tmp_path: Path) -> None:
    source = write_txt(tmp_path / "stories.txt", STORIES)
    result = prepare_text(PrepareOptions(source=str(source), vocab_size=300, val_fraction=0.25, out=tmp_path / "d"))
    data = result.data_dir
    assert not result.reused
    assert data.meta["train_documents"] + data.meta["val_documents"] == 60
    assert data.meta["val_documents"] == 15
    assert data.dtype == np.uint16
    tokenizer = load_tokenizer(data.tokenizer_path)
    text = decode(tokenizer, data.tokens("train"))
    documents = [part for part in text.split("<|endoftext|>") if part]
    assert set(documents) == set(STORIES)
    assert data.meta["train_bytes"] == sum(len(d.encode()) for d in documents)


def test_rerun_reuses_and_changes_rebuild(tmp_path: Path) -> None:
    source = write_txt(tmp_path / "stories.txt", STORIES)
    options = PrepareOptions(source=str(source), vocab_size=300, out=tmp_path / "d")
    first = prepare_text(options)
    again = prepare_text(options)
    assert again.reused and again.data_dir.meta["key"] == first.data_dir.meta["key"]
    changed = prepare_text(PrepareOptions(source=str(source), vocab_size=320, out=tmp_path / "d"))
    assert not changed.reused


def test_jsonl_with_text_field_and_separate_val(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps({"story": s, "id": i}) for i, s in enumerate(STORIES * 20)))
    val = tmp_path / "val.jsonl"
    val.write_text("\n".join(json.dumps({"story": s}) for s in STORIES))
    result = prepare_text(PrepareOptions(source=str(train), val=str(val), text_field="story", vocab_size=300,
                                         out=tmp_path / "d"))
    assert result.data_dir.meta["train_documents"] == 60
    assert result.data_dir.meta["val_documents"] == 3


def test_json_array_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    array = tmp_path / "docs.json"
    array.write_text(json.dumps([{"text": s} for s in STORIES * 10]))
    assert prepare_text(PrepareOptions(source=str(array), vocab_size=300, out=tmp_path / "a")).data_dir.meta[
        "train_documents"] > 0
    table = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"content": STORIES * 10}), table)
    result = prepare_text(PrepareOptions(source=str(table), text_field="content", vocab_size=300, out=tmp_path / "p"))
    assert result.data_dir.meta["train_documents"] + result.data_dir.meta["val_documents"] == 30


def test_reuse_a_given_tokenizer(tmp_path: Path) -> None:
    source = write_txt(tmp_path / "stories.txt", STORIES)
    first = prepare_text(PrepareOptions(source=str(source), vocab_size=300, out=tmp_path / "a")).data_dir
    options = PrepareOptions(source=str(source), tokenizer=first.tokenizer_path, out=tmp_path / "b")
    second = prepare_text(options).data_dir
    assert second.meta["tokenizer_hash"] == first.meta["tokenizer_hash"]
    assert np.array_equal(np.asarray(first.tokens("train")), np.asarray(second.tokens("train")))


def test_separator_and_limit() -> None:
    assert list(split_documents("a\n---\nb\n---\n\nc", "---")) == ["a", "b", "c"]
    assert list(split_documents("one\ntwo\n\n\nthree", None)) == ["one\ntwo", "three"]


def test_meta_names_how_documents_were_split(tmp_path: Path) -> None:
    """test-model --eval-file reads through prepare and reports this rule, so both name the same reading."""
    source = write_txt(tmp_path / "stories.txt", STORIES)
    blank = prepare_text(PrepareOptions(source=str(source), vocab_size=300, out=tmp_path / "a")).data_dir
    assert blank.meta["document_split"] == "blank lines"
    dashes = prepare_text(PrepareOptions(source=str(source), vocab_size=300, separator="---", out=tmp_path / "b"))
    assert dashes.data_dir.meta["document_split"] == "separator '---'"


@pytest.mark.parametrize(("content", "message"), [
    (b"", "file is empty"),
    (b"\x00\x01\x02binary", "looks like a binary file"),
    (b"caf\xe9 latin-1", "not valid UTF-8 at byte 3"),
])
def test_bad_text_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(CogniError, match=message):
        prepare_text(PrepareOptions(source=str(path), vocab_size=300, out=tmp_path / "d"))


def test_missing_text_field_names_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"body": "hello"}\n')
    with pytest.raises(CogniError, match="no field 'text'; use --text-field with one of: body"):
        prepare_text(PrepareOptions(source=str(path), vocab_size=300, out=tmp_path / "d"))


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "ok"}\n{"text": broken}\n')
    with pytest.raises(CogniError, match="line 2 is not valid JSON"):
        prepare_text(PrepareOptions(source=str(path), vocab_size=300, out=tmp_path / "d"))


def test_named_source_without_hub_is_a_clear_error(tmp_path: Path) -> None:
    expected = r"could not reach the Hugging Face hub for roneneldan/TinyStories \(\w+\); pass a local file"
    with pytest.raises(CogniError, match=expected):
        prepare_text(PrepareOptions(source="tinystories", limit=10, out=tmp_path / "d"))


def test_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(CogniError, match="no such file, and not a named dataset"):
        prepare_text(PrepareOptions(source=str(tmp_path / "nope.txt"), out=tmp_path / "d"))


@pytest.mark.slow
def test_cli_on_shared_tinystories(tmp_path: Path) -> None:
    train, val = shared_data("tinystories_train.txt"), shared_data("tinystories_valid.txt")
    out = tmp_path / "ts"
    result = run_cli("prepare", str(train), "--val", str(val), "--vocab-size", "1024", "--out", str(out),
                     env={"COGNI_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    data = DataDir.open(out)
    assert data.meta["val_tokens"] > 10_000 and data.meta["vocab_size"] == 1024
    assert 3.0 < data.bytes_per_token("val") < 5.0
    again = run_cli("prepare", str(train), "--val", str(val), "--vocab-size", "1024", "--out", str(out),
                    env={"COGNI_HOME": str(tmp_path / "home")})
    assert "reused" in again.stderr


@pytest.mark.slow
def test_default_out_is_under_the_user_cache(tmp_path: Path) -> None:
    source = write_txt(tmp_path / "stories.txt", STORIES)
    home = tmp_path / "home"
    result = run_cli("prepare", str(source), "--vocab-size", "300", env={"COGNI_HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(home / "cache")


def numbered_stories(path: Path, count: int) -> Path:
    return write_txt(path, [f"Story {number}: the fox met owl number {number}." for number in range(count)], repeat=1)


def split_texts(data: DataDir, split: str) -> list[str]:
    text = decode(load_tokenizer(data.tokenizer_path), data.tokens(split))
    return [part for part in text.split("<|endoftext|>") if part]


@pytest.mark.parametrize(("fraction", "val_documents"), [(0.4, 8), (0.6, 12), (0.7, 14), (0.05, 1), (0.25, 5)])
def test_val_fraction_holds_out_that_share_of_documents(tmp_path: Path, fraction: float, val_documents: int) -> None:
    source = numbered_stories(tmp_path / "stories.txt", 20)
    data = prepare_text(PrepareOptions(source=str(source), vocab_size=300, val_fraction=fraction,
                                       out=tmp_path / "d")).data_dir
    assert (data.meta["val_documents"], data.meta["train_documents"]) == (val_documents, 20 - val_documents)
    assert data.meta["val_fraction"] == fraction
    train, val = split_texts(data, "train"), split_texts(data, "val")
    assert not set(train) & set(val) and len(set(train) | set(val)) == 20


def test_the_held_out_documents_are_a_seeded_choice(tmp_path: Path) -> None:
    source = numbered_stories(tmp_path / "stories.txt", 40)

    def held_out(out: str, seed: int) -> list[str]:
        options = PrepareOptions(source=str(source), vocab_size=300, val_fraction=0.25, seed=seed, out=tmp_path / out)
        return split_texts(prepare_text(options).data_dir, "val")

    first, again, other = held_out("a", 0), held_out("b", 0), held_out("c", 1)
    assert first == again and len(first) == len(other) == 10
    assert first != other
    numbers = [int(story.split(":")[0].removeprefix("Story ")) for story in first]
    assert numbers != list(range(3, 40, 4))  # drawn, not every 4th


@pytest.mark.parametrize(("count", "fraction", "message"), [
    (20, 1.0, "--val-fraction 1.0 must be between 0 and 1"),
    (3, 0.9, "--val-fraction 0.9 holds out all 3 documents of .*stories.txt, leaving none to train on"),
    (3, 0.1, "--val-fraction 0.1 holds out none of the 3 documents of .*stories.txt; use at least 0.33"),
])
def test_a_val_fraction_that_empties_a_split_is_refused(tmp_path: Path, count: int, fraction: float,
                                                        message: str) -> None:
    source = numbered_stories(tmp_path / "stories.txt", count)
    with pytest.raises(CogniError, match=message):
        prepare_text(PrepareOptions(source=str(source), vocab_size=300, val_fraction=fraction, out=tmp_path / "d"))
