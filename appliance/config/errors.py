"""Validation errors as one line per problem: file:line: dotted.key: reason."""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import ValidationError


def describe_errors(source: Path, text: str, exc: ValidationError) -> str:
    """One line per problem: file:line: dotted.key: reason (got value)."""
    lines = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if not str(p).startswith("function-after")]
        loc = [p for p in loc if p not in _UNION_TAGS]
        key = _dotted(loc) or "(top level)"
        reason = error["msg"]
        if error["type"] == "extra_forbidden":
            reason = "unknown key (not allowed here; check the spelling)"
        got = error.get("input")
        shown = (
            ""
            if error["type"] in {"missing", "extra_forbidden"} or isinstance(got, dict)
            else f" (got {got!r})"
        )
        env_name = "APPLIANCE_" + "__".join(p for p in loc if not p.isdigit()).upper()
        where = _line_of(text, loc)
        if env_name in os.environ:
            prefix = f"environment {env_name}"
        else:
            prefix = f"{source}:{where}" if where else f"{source}"
        lines.append(f"{prefix}: {key}: {reason}{shown}")
    return "\n".join(lines)


_UNION_TAGS = {"simulator", "folder", "file", "stream", "v4l2"}


def _dotted(loc: list[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out


def _line_of(text: str, loc: list[str]) -> int | None:
    """Line of `loc` (e.g. lines.0.cameras.1.source.path) in the TOML text, best effort.

    Walks the table headers, counting array-of-tables entries so that indices match, and looks
    inside inline tables; falls back to the line of the longest matching prefix.
    """
    target = tuple(loc)
    best: tuple[int, int] | None = None  # (matched length, line number)
    table: tuple[str, ...] = ()
    counters: dict[tuple[str, ...], int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        header = re.match(r"^\[\[\s*([\w.-]+)\s*\]\]$|^\[\s*([\w.-]+)\s*\]$", line)
        if header:
            names = (header.group(1) or header.group(2)).split(".")
            path: tuple[str, ...] = ()
            for name in names[:-1]:
                path += (name,)
                if path in counters:
                    path += (str(counters[path]),)
            path += (names[-1],)
            if header.group(1):
                counters[path] = counters.get(path, -1) + 1
                # A new parent entry restarts the count of its children.
                for child in [k for k in counters if len(k) > len(path) and k[: len(path)] == path]:
                    del counters[child]
                path += (str(counters[path]),)
            table = path
            candidates = [table]
        else:
            key = re.match(r"^([\w-]+)\s*=", line)
            if not key:
                continue
            candidates = [table + (key.group(1),)]
            candidates += [table + (key.group(1), inner) for inner in re.findall(r"([\w-]+)\s*=", line)[1:]]
        for candidate in candidates:
            size = _common_prefix(candidate, target)
            if size == len(candidate) and (best is None or size > best[0]):
                best = (size, number)
    return best[1] if best else None


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return size
