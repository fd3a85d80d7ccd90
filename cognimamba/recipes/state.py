"""OUT/recipe.json: which stages of a recipe are done, and their figures, so running it again continues.

Written atomically after every stage, so an interrupt leaves either the old state or the new one: a stage
is marked done only once its output is complete, and a stage that was stopped is resumed, not redone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cognimamba.errors import CogniError
from cognimamba.system.fileio import atomic_write_json

STATE_FILE = "recipe.json"
STATE_VERSION = 1


@dataclass
class RecipeState:
    path: Path
    identity: dict[str, Any]
    done: list[str] = field(default_factory=list)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)  # per stage, for the final table

    @classmethod
    def open(cls, out: Path, identity: dict[str, Any]) -> RecipeState:
        """The state in `out`, or a fresh one; a folder that holds another recipe's stages is refused."""
        path = Path(out) / STATE_FILE
        if not path.is_file():
            return cls(path, identity)
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CogniError(f"{path}: corrupted ({error}); remove it to start the recipe over") from error
        if saved.get("identity") != identity:
            changed = sorted(key for key in {**identity, **saved.get("identity", {})}
                             if saved.get("identity", {}).get(key) != identity.get(key))
            raise CogniError(f"{out}: holds a recipe with other {', '.join(changed)}; run the same command to "
                             "continue it, or choose another --out")
        return cls(path, identity, list(saved.get("done", [])), dict(saved.get("figures", {})))

    def is_done(self, stage: str) -> bool:
        return stage in self.done

    def finish(self, stage: str, figures: dict[str, Any] | None = None) -> None:
        if stage not in self.done:
            self.done.append(stage)
        self.figures[stage] = figures or {}
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {"version": STATE_VERSION, "identity": self.identity, "done": self.done,
                                      "figures": self.figures})
