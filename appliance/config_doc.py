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


_NO_VALUE = object()


def _field_default(info: FieldInfo) -> Any:
    """The field's default value; `_NO_VALUE` when required or computed from other fields."""
    if info.is_required():
        return _NO_VALUE
    if info.default_factory is None:
        return info.default
    try:
        # pydantic allows factories that take the validated data; those raise TypeError here
        return info.default_factory()  # type: ignore[call-arg]
    except TypeError:
        return _NO_VALUE


def _default(info: FieldInfo, value: Any = _NO_VALUE) -> str:
    """The default as documented; `value` is what the enclosing section's default holds."""
    if value is _NO_VALUE:
        if info.is_required():
            return "required"
        value = _field_default(info)
        if value is _NO_VALUE:
            return "(computed)"
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        text = str(value).replace(str(REPO_ROOT), "<install dir>")
        return f"`{text}`"
    return f"`{value!r}`"


def table(model: type[BaseModel], prefix: str, defaults: BaseModel | None = None) -> list[str]:
    """One markdown table row per field of `model`.

    `defaults`: the section as its parent creates it, whose values can differ from the class's
    own defaults (each hard-case strategy has its own quotas).
    """
    rows = ["| key | type | default | bounds | meaning |", "| --- | --- | --- | --- | --- |"]
    for name, info in model.model_fields.items():
        description = (info.description or "").replace("|", "\\|").replace("\n", " ")
        kind = _type_name(info.annotation).replace("|", "\\|")
        bounds = _bounds(info).replace("|", "\\|")
        default = _default(info) if defaults is None else _default(info, getattr(defaults, name))
        rows.append(f"| `{prefix}{name}` | {kind} | {default} | {bounds} | {description} |")
    return rows


def _sections(
    model: type[BaseModel], prefix: str, defaults: BaseModel | None = None
) -> list[tuple[str, type[BaseModel], BaseModel | None]]:
    """Every nested section of `model` (`sync`, then `sync.images`, ...), depth first, with the
    values its parent's defaults give it (None for a required section)."""
    found: list[tuple[str, type[BaseModel], BaseModel | None]] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            values = getattr(defaults, name) if defaults is not None else _section_default(info)
            found.append((f"{prefix}{name}", annotation, values))
            found += _sections(annotation, f"{prefix}{name}.", values)
    return found


def _section_default(info: FieldInfo) -> BaseModel | None:
    value = _field_default(info)
    return value if isinstance(value, BaseModel) else None


def render() -> str:
    """The whole reference."""
    out = [HEADER, "## Top level", "", *table(Settings, ""), ""]
    for name, model, defaults in _sections(Settings, ""):
        level = "#" * min(4, name.count(".") + 2)
        rows = table(model, f"{name}.", defaults)
        out += [f"{level} [{name}]", "", (model.__doc__ or "").strip(), "", *rows, ""]
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
