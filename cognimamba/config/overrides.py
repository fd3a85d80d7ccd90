"""A config from a profile, a TOML file and `--set` overrides, and back to TOML."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from cognimamba.config.profiles import get_profile
from cognimamba.config.schema import SECTIONS, Config, apply_mapping, set_field, validate
from cognimamba.errors import CogniError


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise CogniError(f"--set {text!r}: expected section.field=value, e.g. --set train.lr=3e-4")
    return key.strip(), value.strip()


def load_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CogniError(f"{path}: config file not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CogniError(f"{path}: not valid TOML ({error})") from error


def to_toml(config: Config) -> str:
    """Serialize the config as TOML (stdlib has no writer; the values are plain scalars and lists)."""

    def render(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(value, list):
            return "[" + ", ".join(render(item) for item in value) + "]"
        return repr(value)

    lines = [f"profile = {render(config.profile)}", ""]
    for section_name in SECTIONS:
        lines.append(f"[{section_name}]")
        section = getattr(config, section_name)
        for item in dataclasses.fields(section):
            lines.append(f"{item.name} = {render(getattr(section, item.name))}")
        lines.append("")
    return "\n".join(lines)


def resolve_config(profile: str | None, config_file: Path | None, overrides: list[str]) -> Config:
    """Profile preset, then the TOML file, then --set overrides; validated."""

    file_data = load_toml(config_file) if config_file else {}
    profile_name = profile or file_data.get("profile") or "cpu"
    config = get_profile(str(profile_name))
    apply_mapping(config, file_data, str(config_file))
    config.profile = str(profile_name)
    for text in overrides:
        key, value = parse_override(text)
        set_field(config, key, value)
    validate(config)
    return config
