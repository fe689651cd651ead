"""Shared pieces of the config tree: the closed section base, ids, where things live."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "default.toml"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # safe in MQTT topics, S3 keys and file names


def default_models_dir() -> Path:
    """The shipped model packages: `models/` of a source checkout, else beside the virtualenv.

    A non-editable install (the systemd installer's /opt/appliance/releases/<version>/venv) puts
    the package in site-packages, away from the checkout; the installer copies `models/` next to
    the virtualenv, so it is found at `<venv>/../models`.
    """
    if (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT / "models"
    return Path(sys.prefix).parent / "models"


class ConfigError(Exception):
    """The configuration is invalid; the message names the key and the reason."""


DropPolicy = Literal["latest", "queue", "block"]


class Section(BaseModel):
    """Base for every config section: closed (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")
