"""The data dir contract between `prepare` and everything that reads tokens.

    DIR/train.bin, DIR/val.bin        flat token ids (uint16 when the vocab fits, else uint32)
    DIR/train.mask.bin, val.mask.bin  optional uint8 loss mask (1 = trained), for chat data
    DIR/train.conversations.bin, ...  chat data: int64 token offset where each conversation starts
    DIR/train.turns.bin, ...          chat data: int64 token offset where each user turn starts
    DIR/tokenizer.json
    DIR/meta.json                     written last: its presence means the dir is complete
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cognimamba.data.conversation_fit import ConversationBounds
from cognimamba.errors import CogniError
from cognimamba.system.fileio import atomic_write_json, disk_errors, fsync_dir

DATA_FORMAT_VERSION = 1
INDEXED_CHAT_VERSION = 3  # meta.json's chat_data_version from which chat dirs hold conversation offsets
# meta.json's text_data_version from which text dirs name each split's document rule (`val_document_split` too)
SPLIT_PER_FILE_TEXT_VERSION = 2
OFFSET_DTYPE = np.dtype(np.int64)


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


class TokenWriter:
    """Appends token ids (and optionally a loss mask) to a .bin file in a staging directory."""

    def __init__(self, staging: Path, split: str, dtype: np.dtype, with_mask: bool = False,
                 with_index: bool = False) -> None:
        self.tokens_path = staging / f"{split}.bin"
        self.mask_path = staging / f"{split}.mask.bin" if with_mask else None
        self.dtype = dtype
        self.count = 0
        self.masked_in = 0
        self._tokens = open(self.tokens_path, "wb")  # noqa: SIM115 - closed in close()
        self._mask = open(self.mask_path, "wb") if self.mask_path else None  # noqa: SIM115
        self._starts = open(staging / f"{split}.conversations.bin", "wb") if with_index else None  # noqa: SIM115
        self._turns = open(staging / f"{split}.turns.bin", "wb") if with_index else None  # noqa: SIM115

    def write_conversation(self, ids: list[int], mask: list[int], turn_offsets: list[int]) -> None:
        """One whole conversation; `turn_offsets` are where its user turns start, relative to its first token."""
        assert self._starts is not None and self._turns is not None, "open the writer with_index=True"
        start = self.count
        with disk_errors(str(self.tokens_path)):
            self._starts.write(np.asarray([start], dtype=OFFSET_DTYPE).tobytes())
            self._turns.write((np.asarray(turn_offsets, dtype=OFFSET_DTYPE) + start).tobytes())
        self.write(ids, mask)

    def write(self, ids: list[int] | np.ndarray, mask: list[int] | np.ndarray | None = None) -> None:
        array = np.asarray(ids, dtype=self.dtype)
        with disk_errors(str(self.tokens_path)):
            self._tokens.write(array.tobytes())
            if self._mask is not None:
                mask_array = np.asarray(mask, dtype=np.uint8)
                if len(mask_array) != len(array):
                    raise ValueError("mask and tokens differ in length")
                self._mask.write(mask_array.tobytes())
                self.masked_in += int(mask_array.sum())
        self.count += len(array)

    def close(self) -> None:
        for handle in (self._tokens, self._mask, self._starts, self._turns):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()


def staging_dir(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def commit_staging(out: Path, staging: Path, meta: dict[str, Any]) -> None:
    """Move staged files into `out`, then write meta.json last so a half-written dir is never read."""
    meta_path = out / "meta.json"
    if meta_path.exists():
        meta_path.unlink()
    for stale in out.glob("*.bin"):
        stale.unlink()
    for item in staging.iterdir():
        os.replace(item, out / item.name)
    staging.rmdir()
    fsync_dir(out)
    atomic_write_json(meta_path, {"version": DATA_FORMAT_VERSION, **meta})


@dataclass
class DataDir:
    """A prepared data dir, read through memory maps."""

    path: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, path: Path | str) -> DataDir:
        path = Path(path)
        if not path.is_dir():
            raise CogniError(f"{path}: data dir not found; create it with `cogni prepare SOURCE --out {path}`")
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            raise CogniError(f"{path}: no meta.json, so not a prepared data dir (or prepare was interrupted); "
                             "run `cogni prepare` again")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CogniError(f"{meta_path}: corrupted ({error}); run `cogni prepare` again") from error
        if meta.get("version") != DATA_FORMAT_VERSION:
            raise CogniError(f"{meta_path}: data format version {meta.get('version')} is not supported "
                             f"(expected {DATA_FORMAT_VERSION}); run `cogni prepare` again")
        for name in ("train.bin", "tokenizer.json"):
            if not (path / name).is_file():
                raise CogniError(f"{path}: missing {name}; run `cogni prepare` again")
        return cls(path, meta)

    @classmethod
    def reusable(cls, path: Path, key: str) -> DataDir | None:
        """The complete data dir at `path` if it was prepared from the same inputs (same cache key)."""
        if not (path / "meta.json").is_file():
            return None
        try:
            existing = cls.open(path)
        except CogniError:
            return None
        return existing if existing.meta.get("key") == key else None

    @property
    def tokenizer_path(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta["dtype"])

    @property
    def has_mask(self) -> bool:
        return (self.path / "train.mask.bin").is_file()

    def tokens(self, split: str) -> np.ndarray:
        file = self.path / f"{split}.bin"
        if not file.is_file() or file.stat().st_size == 0:
            if split == "val":
                raise CogniError(f"{self.path}: has no validation tokens; prepare with --val FILE or --val-fraction")
            raise CogniError(f"{file}: missing or empty; run `cogni prepare` again")
        expected = int(self.meta.get(f"{split}_tokens", -1))
        if file.stat().st_size % self.dtype.itemsize:
            raise CogniError(f"{file}: {file.stat().st_size} bytes is not a whole number of {self.dtype.name} tokens; "
                             "the file is truncated, run `cogni prepare` again")
        array = np.memmap(file, dtype=self.dtype, mode="r")
        if expected >= 0 and len(array) != expected:
            raise CogniError(f"{file}: holds {len(array)} tokens but meta.json says {expected}; "
                             "the file is truncated, run `cogni prepare` again")
        return array

    def mask(self, split: str) -> np.ndarray | None:
        file = self.path / f"{split}.mask.bin"
        return np.memmap(file, dtype=np.uint8, mode="r") if file.is_file() else None

    def conversation_bounds(self, split: str) -> ConversationBounds:
        """Where each conversation of a chat split starts and ends, and where its user turns start."""
        if int(self.meta.get("chat_data_version", 0)) < INDEXED_CHAT_VERSION:
            raise CogniError(f"{self.path}: chat data prepared by an older cogni, without conversation offsets "
                             "(training windows now start at a conversation start); run `cogni prepare` again")
        total = len(self.tokens(split))
        offsets = []
        for kind in ("conversations", "turns"):
            file = self.path / f"{split}.{kind}.bin"
            if not file.is_file() or file.stat().st_size % OFFSET_DTYPE.itemsize:
                raise CogniError(f"{file}: missing or truncated; run `cogni prepare` again")
            offsets.append(np.fromfile(file, dtype=OFFSET_DTYPE))
        starts, turns = offsets
        ordered = len(starts) > 0 and starts[0] == 0 and bool(np.all(np.diff(starts) > 0)) and starts[-1] < total
        if not ordered or len(starts) != int(self.meta.get(f"{split}_conversations", len(starts))):
            raise CogniError(f"{self.path}/{split}.conversations.bin: does not match {split}.bin; "
                             "run `cogni prepare` again")
        return ConversationBounds.from_offsets(starts, turns, total)

    def document_split(self, split: str) -> str | None:
        """How `split`'s text was cut into documents ("blank lines", "separator '<|endoftext|>'", ...), or None
        where an older dir did not say: before SPLIT_PER_FILE_TEXT_VERSION only the training file's rule was kept."""
        if split == "val" and int(self.meta.get("text_data_version", 1)) < SPLIT_PER_FILE_TEXT_VERSION:
            return None
        return self.meta.get("document_split" if split == "train" else f"{split}_document_split")

    @property
    def end_of_text_id(self) -> int:
        return int(self.meta["end_of_text_id"])

    def has_split(self, split: str) -> bool:
        return int(self.meta.get(f"{split}_tokens", 0)) > 0

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes of source text per token, for tokenizer-independent bits per byte."""
        tokens = int(self.meta.get(f"{split}_tokens", 0))
        text_bytes = int(self.meta.get(f"{split}_bytes", 0))
        if not tokens or not text_bytes:
            return 0.0
        return text_bytes / tokens
