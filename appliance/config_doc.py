"""Write `docs/configuration.md` from the config schema, so the docs cannot drift from the code.

python -m appliance.config_doc > docs/configuration.md
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from appliance.config import REPO_ROOT, CameraConfig, LineConfig, Settings, TierConfig

HEADER = """# Configuration reference

Generated from the schema by `python -m appliance.config_doc`; do not edit by hand.

The appliance reads one TOML file (`appliance run --config FILE`, `$APPLIANCE_CONFIG`, or the
embedded demo `appliance/default.toml`). Unknown keys are errors; `appliance check-config FILE`
names the bad key, its line and the reason. Every key can be overridden from the environment as
`APPLIANCE_<SECTION>__<KEY>` (for example `APPLIANCE_MQTT__HOST`), top-level keys as
`APPLIANCE_<KEY>` (`APPLIANCE_NODE_ID`, `APPLIANCE_STATE_DIR`); the environment wins over the
file. Secrets never go in the file: keys ending in `_file` name files (or systemd credentials).
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " | ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin in (list, tuple):
        inner = ", ".join(_type_name(a) for a in typing.get_args(annotation) if a is not Ellipsis)
        return f"{origin.__name__}[{inner}]"
    if annotation is type(None):
        return "none"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for key, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, key, None)
            if value is not None:
                parts.append(f"{sign} {value}")
        for key in ("min_length", "max_length", "pattern"):
            value = getattr(item, key, None)
            if value is not None:
                parts.append(f"{key} {value}")
    return ", ".join(parts)


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None:
        try:
            # pydantic allows factories that take the validated data; those raise TypeError here
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        text = str(value).replace(str(REPO_ROOT), "<install dir>")
        return f"`{text}`"
    return f"`{value!r}`"


def table(model: type[BaseModel], prefix: str) -> list[str]:
    """One markdown table row per field of `model`."""
    rows = ["| key | type | default | bounds | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        description = (info.description or "").replace("|", "\\|").replace("\n", " ")
        kind = _type_name(info.annotation).replace("|", "\\|")
        bounds = _bounds(info).replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | {kind} | {_default(info)} | {bounds} | {description} |")
    return rows


def render() -> str:
    """The whole reference."""
    out = [HEADER, "## Top level", "", *table(Settings, ""), ""]
    sections: list[tuple[str, type[BaseModel]]] = []
    for name, info in Settings.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sections.append((name, annotation))
    for name, model in sections:
        out += [f"## [{name}]", "", (model.__doc__ or "").strip(), "", *table(model, f"{name}."), ""]
    out += ["## [[lines]]", "", (LineConfig.__doc__ or "").strip(), "", *table(LineConfig, "lines[]."), ""]
    out += ["### tiers", "", (TierConfig.__doc__ or "").strip(), "", *table(TierConfig, "tiers[]."), ""]
    out += [
        "## [[lines.cameras]]",
        "",
        (CameraConfig.__doc__ or "").strip(),
        "",
        *table(CameraConfig, "cameras[]."),
        "",
    ]
    source = CameraConfig.model_fields["source"].annotation
    for variant in typing.get_args(source):
        kind = variant.model_fields["kind"].default
        out += [
            f"### source kind `{kind}`",
            "",
            (variant.__doc__ or "").strip(),
            "",
            *table(variant, "source."),
            "",
        ]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
