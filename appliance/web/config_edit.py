"""Editing the config file from the console: validate as `appliance run` would, save atomically.

The file edited is the one the service was started with (`--config` or `$APPLIANCE_CONFIG`).
A service running the embedded demo has none: its edits go to `<state_dir>/appliance.toml`,
which takes effect once the service is started with `--config` pointing at it. Changes apply
at the next restart; the previous file is kept beside it as `<name>.previous`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from appliance.config import DEFAULT_CONFIG, Settings, describe_errors

if TYPE_CHECKING:
    from appliance.service import Service

MAX_TEXT = 200_000


def target(service: Service) -> Path:
    """The file the console writes."""
    return service.config_path or service.state_dir / "appliance.toml"


def current_text(service: Service) -> str:
    """The text an admin starts editing from: the config file, else the running settings as TOML.

    The embedded demo has no file of its own; its settings are written out in full (paths
    absolute, environment overrides included), so that the saved file means the same thing
    wherever it lives.
    """
    try:
        return target(service).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        pass
    if service.config_path is not None:
        return ""
    header = (
        f"# Written by the console from the running configuration (embedded demo, {DEFAULT_CONFIG.name}\n"
        "# plus environment overrides). Start the appliance with --config pointing at this file.\n"
    )
    return header + to_toml(service.settings.model_dump(mode="json", exclude_none=True))


def to_toml(data: dict[str, Any]) -> str:
    """TOML for a tree of tables, arrays of tables and plain values (enough for Settings)."""
    out: list[str] = []
    _table(out, [], data)
    return "\n".join(out).lstrip("\n") + "\n"


def _table(out: list[str], path: list[str], table: dict[str, Any]) -> None:
    def is_table_array(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    for key, value in table.items():
        if not isinstance(value, dict) and not is_table_array(value):
            out.append(f"{_key(key)} = {_value(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            out.append(f"\n[{'.'.join(_key(p) for p in [*path, key])}]")
            _table(out, [*path, key], value)
    for key, value in table.items():
        if is_table_array(value):
            for item in value:
                out.append(f"\n[[{'.'.join(_key(p) for p in [*path, key])}]]")
                _table(out, [*path, key], item)


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def validate(text: str, path: Path) -> list[str]:
    """Problems with `text` as the config file at `path` (empty list: it would load and start)."""
    if len(text) > MAX_TEXT:
        return [f"the file is too long ({len(text)} characters, at most {MAX_TEXT})"]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return ["the text contains characters that are not valid UTF-8"]
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return [f"{path}: not valid TOML: {exc}"]
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        return describe_errors(path, text, exc).splitlines()
    except (TypeError, ValueError) as exc:  # e.g. a key that is not a valid argument name
        return [f"{path}: {exc}"]
    models_dir = (
        settings.models_dir if settings.models_dir.is_absolute() else path.parent / settings.models_dir
    )
    problems = []
    for i, line in enumerate(settings.lines):
        for j, tier in enumerate(line.tiers):
            if tier.model != "cloud" and not (models_dir / tier.model / "manifest.json").is_file():
                problems.append(
                    f"{path}: lines[{i}].tiers[{j}].model: no model package {tier.model!r} in {models_dir}"
                )
    return problems


def save(text: str, path: Path) -> None:
    """Write `text` to `path` atomically (temp file, fsync, rename), keeping the old file as .previous."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            previous = path.with_name(path.name + ".previous")
            previous.write_bytes(path.read_bytes())
            os.chmod(temp, path.stat().st_mode & 0o777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def diff(old: str, new: str, name: str) -> str:
    """A unified diff for the audit log."""
    return "".join(
        difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), name, name, n=1)
    )


def file_sha256(path: Path | None) -> str | None:
    """sha256 of a file's bytes, or None when there is no such file."""
    if path is None:
        return None
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def restart_pending(service: Service, started_sha256: str | None) -> bool:
    """True when the file on disk is not what the running service loaded."""
    if service.config_path is None:
        return target(service).exists()  # saved, but the demo does not read it until told to
    return file_sha256(service.config_path) != started_sha256
