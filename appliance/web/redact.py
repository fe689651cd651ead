"""What the console shows of the configuration: never a credential, to anyone who only reads.

Secrets belong in files the config points at (`url_file`, `password_file`, systemd
credentials), but a stream URL with `user:password@` or `?token=` in the config file itself is
common, and the settings page and `GET /api/settings` are open to viewers. So:

- the effective settings (everyone) go through `redact_settings`: every string that looks like
  a URL goes through `hardware.sources.opencv.redact_url` (userinfo and query values masked),
  and the value of any key that names a secret (`password`, `token`, `secret`, `api_key`... but
  not `password_file` and the like, which are paths) becomes `***`;
- the config file's text goes to admins unchanged (they edit it, and could read the file
  anyway); everyone else gets `redact_text`: URLs and secret-named assignments masked alike.
"""

from __future__ import annotations

import re
from typing import Any

from hardware.sources.opencv import redact_url

MASK = "***"
_SECRET_KEY = re.compile(r"(?i)(password|passwd|pwd|secret|token|api_?key|access_?key|credential)s?$")
_PATH_KEY = re.compile(r"(?i)_(file|path|dir|profile)$")
_STRING = re.compile(r""""(?:[^"\\\n]|\\.)*"|'[^'\n]*'""")
_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>]+""")
_ASSIGNMENT = re.compile(
    r"""(?im)^(\s*"?([A-Za-z0-9_.-]+)"?\s*=\s*)("(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s#]+)"""
)
_INLINE = re.compile(r"""(?i)([{,]\s*"?([A-Za-z0-9_-]+)"?\s*=\s*)("(?:[^"\\\n]|\\.)*"|'[^'\n]*')""")


def secret_key(name: str) -> bool:
    """A key whose value is a secret itself (not a path to one)."""
    return bool(_SECRET_KEY.search(name)) and not _PATH_KEY.search(name)


def redact_settings(value: Any, key: str = "") -> Any:
    """A copy of a settings tree (`model_dump(mode="json")`) that is safe to show to anyone."""
    if isinstance(value, dict):
        return {k: redact_settings(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_settings(v, key) for v in value]
    if isinstance(value, str):
        if key and secret_key(key):
            return MASK
        return redact_url(value) if "://" in value else value
    return value


def redact_text(text: str) -> str:
    """The config file's text with URLs and secret-named values masked (for non-admins)."""

    def assignment(match: re.Match[str]) -> str:
        if secret_key(match.group(2)):
            return f'{match.group(1)}"{MASK}"'
        return match.group(0)

    def string(match: re.Match[str]) -> str:
        literal = match.group(0)
        if "://" not in literal:
            return literal
        return literal[0] + redact_url(literal[1:-1]) + literal[-1]

    text = _STRING.sub(string, text)  # a whole string literal, so a quote in a password cannot cut it
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)  # bare URLs (comments)
    text = _ASSIGNMENT.sub(assignment, text)
    return _INLINE.sub(assignment, text)
