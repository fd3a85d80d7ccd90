"""A catalogue of things users get wrong, each through the real CLI: one clear error line, non-zero exit, no traceback.

Each case builds its bad input in a scratch dir and names the CLI arguments and the substring its error line must
contain. All cases run as `python -m cognimamba ...` subprocesses, a few at a time, before the first check.
Tracebacks appear only with --debug (last test).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import run_cli

ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


class Scratch:
    """Where a case builds its bad input: files, and copies of the session's tiny data dir and run."""

    def __init__(self, root: Path, data: Path, run: Path, small_data: Path, lora_run: Path) -> None:
        self.root, self.data, self.run, self.small_data, self.lora_run = root, data, run, small_data, lora_run

    def file(self, name: str, content: str | bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return str(path)

    def path(self, name: str) -> str:
        return str(self.root / name)

    def copy(self, source: Path, name: str) -> Path:
        target = self.root / name
        shutil.copytree(source, target)
        return target

    def run_copy(self, name: str) -> Path:
        return self.copy(self.run, name)


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Scratch], list[str]]  # makes the bad input, returns the CLI arguments
    expected: str  # in the one error line
    code: int = 2


def _truncated_weights(s: Scratch) -> list[str]:
    run = s.run_copy("truncated")
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return ["test-model", str(run)]


def _other_vocab_tokenizer(s: Scratch) -> list[str]:
    run = s.run_copy("other-tokenizer")
    shutil.copyfile(s.small_data / "tokenizer.json", run / "tokenizer.json")
    return ["test-model", str(run)]


def _damaged_checkpoints(s: Scratch) -> list[str]:
    run = s.run_copy("damaged")
    for checkpoint in (run / "checkpoints").iterdir():
        optimizer = checkpoint / "optimizer.pt"
        optimizer.write_bytes(optimizer.read_bytes()[:100])
    return ["train", "--out", str(run), "--resume"]


def _tokenizer_without_special_tokens(s: Scratch) -> list[str]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    tokenizer.train_from_iterator(["plain text without chat tokens"] * 5, trainers.BpeTrainer(vocab_size=300))
    tokenizer.save(s.path("plain-tokenizer.json"))
    return ["prepare", s.file("ok.txt", "some text\n\nmore text"), "--tokenizer", s.path("plain-tokenizer.json")]


def _adapter_for_another_base(s: Scratch) -> list[str]:
    from cognimamba.runs.layout import WEIGHTS
    from cognimamba.runs.manifest import write_manifest

    other = s.run_copy("other-base")  # same shapes, other weights: an earlier checkpoint of the same run
    earlier = sorted((other / "checkpoints").glob("step-*"))[0]
    shutil.copyfile(earlier / WEIGHTS, other / WEIGHTS)
    write_manifest(other, [WEIGHTS, "trainer_state.json", "config.json", "tokenizer.json", "generation_config.json"])
    return ["merge", str(other), str(s.lora_run), "--out", s.path("merged")]


CASES = [
    # prepare: the corpus file
    Case("missing data file", lambda s: ["prepare", s.path("nope.txt")], "no such file, and not a named dataset"),
    Case("empty data file", lambda s: ["prepare", s.file("empty.txt", b"")], "file is empty"),
    Case("binary data file", lambda s: ["prepare", s.file("image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")],
         "looks like a binary file (NUL bytes)"),
    Case("non-UTF-8 data file", lambda s: ["prepare", s.file("latin1.txt", "Once upon a time\ncafé".encode("latin-1"))],
         "not valid UTF-8 at byte 20 (line 2); re-save the file as UTF-8"),
    Case("directory as data file", lambda s: ["prepare", str(s.root)], "is a directory"),
    Case("unsupported file type", lambda s: ["prepare", s.file("table.csv", "a,b\n1,2\n")],
         "unsupported file type '.csv'"),
    Case("JSONL with a broken line",
         lambda s: ["prepare", s.file("broken.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": oops}\n')],
         "line 3 is not valid JSON (Expecting value); fix it or pass --skip-bad"),
    Case("JSON array with a syntax error",
         lambda s: ["prepare", s.file("broken.json", '[{"text": "a"},\n {"text": }]')],
         "not valid JSON at line 2"),
    Case("JSON file holding one object",
         lambda s: ["prepare", s.file("wrapped.json", '{\n "data": [\n  {"text": "a"}\n ]\n}\n')],
         "holds one JSON object, not a list of records (the records look like they are under 'data')"),
    Case("parquet file that is not parquet", lambda s: ["prepare", s.file("fake.parquet", "just text")],
         "could not be read as parquet"),
    Case("JSONL records that are not objects", lambda s: ["prepare", s.file("strings.jsonl", '"a story"\n"another"\n')],
         "line 1 is not a JSON object (str)"),
    Case("JSONL without a text field", lambda s: ["prepare", s.file("body.jsonl", '{"body": "a"}\n{"body": "b"}\n')],
         "line 1 has no field 'text'; use --text-field with one of: body"),
    Case("--text-field that does not exist",
         lambda s: ["prepare", s.file("docs.jsonl", '{"text": "a"}\n'), "--text-field", "title"],
         "line 1 has no field 'title'; use --text-field with one of: text"),
    Case("text field that is not text", lambda s: ["prepare", s.file("numbers.jsonl", '{"text": 5}\n')],
         "line 1 field 'text' is not text (int)"),
    Case("only empty documents", lambda s: ["prepare", s.file("blank.jsonl", '{"text": "   "}\n{"text": ""}\n')],
         "no text found (every document was empty)"),
    Case("--val file missing", lambda s: ["prepare", s.file("train.txt", "a story"), "--val", s.path("val.txt")],
         "val.txt: no such file"),
    Case("--vocab-size too small", lambda s: ["prepare", s.file("v.txt", "a story"), "--vocab-size", "10"],
         "--vocab-size 10 is too small; it must be at least 267"),
    Case("--val-fraction out of range", lambda s: ["prepare", s.file("f.txt", "a story"), "--val-fraction", "1.5"],
         "--val-fraction 1.5 must be between 0 and 1"),
    Case("--limit 0", lambda s: ["prepare", s.file("l.txt", "a story"), "--limit", "0"],
         "--limit 0 must be at least 1"),
    Case("--tokenizer that is not a tokenizer",
         lambda s: ["prepare", s.file("t.txt", "a story"), "--tokenizer", s.file("t.json", '{"vocab": [1, 2]}')],
         "not a valid tokenizers JSON file"),
    Case("--tokenizer without chat tokens", _tokenizer_without_special_tokens,
         "tokenizer lacks the special tokens <|endoftext|>"),
    Case("named dataset while offline", lambda s: ["prepare", "tinyshakespeare", "--out", s.path("shakespeare")],
         "could not reach the Hugging Face hub for karpathy/tiny_shakespeare"),
    # the command line itself
    Case("unknown command", lambda s: ["finetune"], "No such command 'finetune'. (see `cogni --help`)"),
    Case("unknown option", lambda s: ["train", "--epochs", "3"], "No such option: --epochs"),
    Case("a word where a number goes", lambda s: ["train", "--max-steps", "many"],
         "Invalid value for '--max-steps'"),
    Case("missing argument", lambda s: ["test-model"], "Missing argument 'RUN'. (see `cogni test-model --help`)"),
    Case("config written over a directory", lambda s: ["config", "--write", str(s.root)],
         "is a directory; give a file name"),
    # the config: profiles, keys, values, TOML files
    Case("unknown profile", lambda s: ["config", "--profile", "16gb"],
         "unknown profile '16gb'; choose one of cpu, 4gb, 6gb, 8gb, 12gb, auto"),
    Case("unknown config key", lambda s: ["config", "--set", "model.depth=4"],
         "unknown config key 'model.depth'; allowed: model.vocab_size"),
    Case("unknown config section", lambda s: ["config", "--set", "optim.lr=1e-3"],
         "unknown config key 'optim.lr'; keys look like section.field"),
    Case("--set without a value", lambda s: ["config", "--set", "train.lr"],
         "expected section.field=value, e.g. --set train.lr=3e-4"),
    Case("value too large", lambda s: ["config", "--set", "train.lr=5"],
         "train.lr = 5.0 is too large; it must be <= 1.0"),
    Case("value too small", lambda s: ["config", "--set", "model.n_layers=0"], "model.n_layers = 0 is too small"),
    Case("not a number", lambda s: ["config", "--set", "model.dim=big"], "model.dim: expected an integer, got 'big'"),
    Case("not a boolean", lambda s: ["config", "--set", "train.compile=maybe"], "expected true or false, got 'maybe'"),
    Case("value not among the choices", lambda s: ["config", "--set", "train.precision=fp8"],
         "train.precision = 'fp8' is not allowed; choose one of auto, fp32, bf16, fp16"),
    Case("heads that do not divide the width",
         lambda s: ["config", "--set", "model.dim=100", "--set", "model.n_heads=8"],
         "model.dim (100) must be divisible by model.n_heads (8)"),
    Case("config file missing", lambda s: ["config", "--config", s.path("nope.toml")], "config file not found"),
    Case("config file not TOML", lambda s: ["config", "--config", s.file("bad.toml", "[train\nlr = ")],
         "not valid TOML"),
    Case("config file with an unknown section",
         lambda s: ["config", "--config", s.file("sec.toml", "[optim]\nlr = 1\n")],
         "unknown section 'optim'"),
    Case("config file with a wrong type",
         lambda s: ["config", "--config", s.file("type.toml", '[train]\nlr = "fast"\n')],
         "train.lr: expected a number, got 'fast'"),
    Case("max time that is not a duration", lambda s: ["train", "--data", str(s.data), "--max-time", "ten minutes"],
         "--max-time = 'ten minutes' is not a duration; use e.g. 90s, 10m or 1h30m"),
    Case("unknown logger", lambda s: ["train", "--data", str(s.data), "--logger", "mlflow"],
         "train.logger = 'mlflow' is not allowed"),
    # train: the data dir and the run dir
    Case("--out that is a file", lambda s: ["train", "--data", str(s.data), "--out", s.file("notes.txt", "mine")],
         "is a file; give a directory for the run"),
    Case("train without data", lambda s: ["train", "--max-steps", "1"], "no data: pass --data DIR"),
    Case("data dir missing", lambda s: ["train", "--data", s.path("no-data")], "data dir not found"),
    Case("data dir not prepared", lambda s: ["train", "--data", s.file("raw/corpus.txt", "text").rsplit("/", 1)[0]],
         "no meta.json, so not a prepared data dir"),
    Case("data dir with a truncated token file",
         lambda s: ["train", "--data", str(_truncate(s.copy(s.data, "cut-data") / "train.bin")), "--out", s.path("r1")],
         "the file is truncated, run `cogni prepare` again"),
    Case("corpus smaller than one sequence", lambda s: ["train", "--data", str(s.small_data), "--out", s.path("r2")],
         "is smaller than one sequence of"),
    Case("--resume without --out", lambda s: ["train", "--data", str(s.data), "--resume"], "--resume needs --out RUN"),
    Case("resume with other model settings",
         lambda s: ["train", "--out", str(s.run_copy("wider")), "--resume", "--set", "model.dim=128"],
         "the model settings differ from the checkpoint's"),
    Case("resume with another profile",
         lambda s: ["train", "--out", str(s.run_copy("prof")), "--resume", "--profile", "4gb"],
         "was trained with the cpu profile; resume without --profile"),
    Case("resume with every checkpoint damaged", _damaged_checkpoints, "no intact checkpoint to resume from"),
    Case("fine-tune on data with another tokenizer",
         lambda s: ["train", "--data", str(s.small_data), "--init-from", str(s.run), "--out", s.path("ft")],
         "tokenized with a different tokenizer than"),
    # run dirs: test-model, chat, plot, merge, export
    Case("run dir missing", lambda s: ["test-model", s.path("no-run")], "run dir not found"),
    Case("run dir without weights",
         lambda s: ["test-model", str(_remove(s.run_copy("no-weights") / "model.safetensors"))],
         "missing model.safetensors; not a complete run dir"),
    Case("truncated model.safetensors", _truncated_weights, "truncated or corrupted safetensors file"),
    Case("tokenizer whose vocab does not match the model", _other_vocab_tokenizer,
         "does not match the model's 512; the tokenizer belongs to another run"),
    Case("run from an incompatible version",
         lambda s: ["test-model", str(_edit_config(s.run_copy("v99"), lambda c: c.update(format_version=99)))],
         "run format version 99 is not supported by this cognimamba (expected 1)"),
    Case("config.json that does not fit the weights",
         lambda s: ["test-model", str(_edit_config(s.run_copy("shape"), lambda c: c["model"].update(ffn_dim=96)))],
         "has shape (256, 64) but config.json implies (192, 64)"),
    Case("--eval-file missing", lambda s: ["test-model", str(s.run), "--eval-file", s.path("eval.txt")],
         "eval.txt: no such file"),
    Case("prompt longer than the context", lambda s: ["chat", str(s.run), "--prompt", "word " * 200],
         "more than the model's context of 64 tokens"),
    Case("adapter for another base model", _adapter_for_another_base,
         "this LoRA adapter was trained on a different base model"),
    Case("export to an unknown format", lambda s: ["export", str(s.run), "--format", "onnx", "--out", s.path("x")],
         "--format 'onnx' is not supported; choose hf or gguf"),
]


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:1001])
    return path.parent


def _remove(path: Path) -> Path:
    path.unlink()
    return path.parent


def _edit_config(run: Path, change: Callable[[dict], None]) -> Path:
    edit_json(run / "config.json", change)
    return run


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory, tiny_data: Path, tiny_run: Path) -> Scratch:
    from rich.console import Console

    from cognimamba.data.prepare import PrepareOptions, prepare_text
    from cognimamba.runs.lora import LoraSettings
    from cognimamba.train.entry import TrainOptions, train
    from tests.conftest import tiny_config

    root = tmp_path_factory.mktemp("bad_inputs")
    corpus = root / "small.txt"
    corpus.write_text("A tiny story.\n\nAnother one.\n\n" * 3)
    small = prepare_text(PrepareOptions(source=str(corpus), vocab_size=300, out=root / "small-data"),
                         Console(quiet=True)).data_dir.path
    lora_run = root / "lora"
    train(TrainOptions(config=tiny_config("train.max_steps=2"), data=tiny_data, out=lora_run, init_from=tiny_run,
                       lora=LoraSettings(rank=2), show_progress=False), Console(quiet=True))
    return Scratch(root, tiny_data, tiny_run, small, lora_run)


@pytest.fixture(scope="module")
def outcomes(scratch: Scratch) -> dict[str, tuple[list[str], object]]:
    """Build every case, then run them all, three subprocesses at a time."""
    env = {**ENV, "COGNI_HOME": str(scratch.root / "home")}
    arguments = {case.name: case.build(scratch) for case in CASES}
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run_cli, *args, env=env, timeout=300) for name, args in arguments.items()}
        return {name: (arguments[name], future.result()) for name, future in futures.items()}


def test_the_catalogue_is_large() -> None:
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gives_one_clear_error_line(outcomes, case: Case) -> None:
    args, result = outcomes[case.name]
    report = f"cogni {' '.join(args)[:200]}\nexit {result.returncode}\nstderr:\n{result.stderr[-2000:]}"
    assert result.returncode == case.code, report
    assert "Traceback" not in result.stderr, report
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, report
    assert case.expected in errors[0], report
    assert "internal error" not in errors[0], report


@pytest.mark.slow
def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("--debug", "config", "--set", "train.lr=5", env=ENV)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "train.lr = 5.0 is too large" in result.stderr


@pytest.mark.slow
def test_skip_bad_skips_and_counts_bad_records(tmp_path: Path) -> None:
    lines = ['{"text": "Once upon a time a cat sat on a mat."}', '{"text": broken', '["not", "an", "object"]',
             '{"body": "no text field"}', '{"text": "The dog ran to the park and played all day."}', "",
             '{"text": 42}', '{"text": "A bird sang a song."}']
    corpus = tmp_path / "mixed.jsonl"
    corpus.write_text("\n".join(lines) + "\n")
    env = {**ENV, "COGNI_HOME": str(tmp_path / "home")}
    refused = run_cli("prepare", str(corpus), "--vocab-size", "300", "--out", str(tmp_path / "d"), env=env)
    assert refused.returncode == 2
    assert "line 2 is not valid JSON" in refused.stderr and "(4 bad records in all)" in refused.stderr
    result = run_cli("prepare", str(corpus), "--vocab-size", "300", "--out", str(tmp_path / "d"), "--skip-bad",
                     "--val-fraction", "0", env=env)
    assert result.returncode == 0, result.stderr
    assert "skipping 4 bad records of 7 (first: line 2 is not valid JSON" in " ".join(result.stderr.split())
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["skipped_records"] == 4 and meta["train_documents"] == 3
