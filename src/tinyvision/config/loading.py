"""Reading a config: YAML file, `key=value` overrides, validation, and error messages that
name the field, the value received and what is allowed."""

from __future__ import annotations

import reprlib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from tinyvision.config.data import DataSource
from tinyvision.config.run import RunConfig
from tinyvision.errors import ConfigError, did_you_mean

# values in a config once YAML aliases (`*name`) are expanded: real configs have hundreds, while a
# few hundred bytes of nested aliases expand to billions (an "alias bomb")
MAX_CONFIG_VALUES = 100_000
MAX_QUOTED_CHARS = 200  # of a value quoted in an error message
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxdict, _QUOTE.maxlist, _QUOTE.maxtuple, _QUOTE.maxset = 3, 8, 8, 8, 8
_QUOTE.maxstring = _QUOTE.maxother = MAX_QUOTED_CHARS


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> RunConfig:
    """Read a YAML file (or take `base`), apply `key=value` overrides, validate.

    Relative data paths in a file are resolved against the file's folder, so a config works from
    any working directory.
    """
    raw: dict = dict(base or {})
    if path is not None:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"Cannot read config {path}: {exc.strerror}.") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config {path} is not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"Config {path} must be a mapping of sections (data:, model:, ...), "
                              f"got a {type(loaded).__name__}.")
        check_size(loaded, str(path))
        raw = _resolve_relative_paths(loaded, path.parent)
    for item in overrides or []:
        apply_override(raw, item)
    return validate_config(raw, source=str(path) if path else "config")


def validate_config(raw: dict, source: str = "config") -> RunConfig:
    check_size(raw, source)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def check_size(raw: object, source: str) -> None:
    """Refuse a config of more than MAX_CONFIG_VALUES values, counted with YAML aliases expanded,
    before anything (validation, an error message) walks or copies it. The count stops at the
    limit, so a bomb or a self-referencing alias costs no more than a normal config."""
    count, pending = 0, [raw]
    while pending:
        value = pending.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError(f"{source} expands to more than {MAX_CONFIG_VALUES:,} values once "
                              "its YAML aliases (*name) are expanded, or refers to itself; a run "
                              "config has a few hundred. Write the values out instead of nesting "
                              "aliases.")
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, (list, tuple, set)):
            pending.extend(value)


def quote(value: object) -> str:
    """`value` as an error message shows it: its repr, at most about MAX_QUOTED_CHARS long."""
    text = _QUOTE.repr(value)
    return text if len(text) <= MAX_QUOTED_CHARS else text[:MAX_QUOTED_CHARS] + "..."


def apply_override(raw: dict, item: str) -> None:
    """Apply one `dotted.key=value` override; the value is parsed as YAML (`0.5`, `[96, 96]`)."""
    if "=" not in item:
        raise ConfigError(f"Override {item!r} must look like key=value, e.g. train.batch_size=32.")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"Override key {key!r} is empty or has an empty part.")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"Override {item!r}: `{part}` is a value, not a section.")
        node = child
    node[parts[-1]] = value


def format_validation_error(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} invalid field(s):"]
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if not _is_union_tag(p)]
        field = ".".join(loc) or "(top level)"
        if error["type"] == "extra_forbidden":
            section = ".".join(loc[:-1]) or "top level"
            allowed = _allowed_keys(error["loc"][:-1])
            hint = did_you_mean(loc[-1], allowed, n=3, cutoff=0.5)
            lines.append(f"  - unknown key `{field}` in section {section}.{hint} "
                         f"Allowed keys: {', '.join(allowed)}.")
        elif error["type"] == "missing":
            lines.append(f"  - `{field}` is required but missing.")
        elif not loc:  # a check across sections: its message names the fields
            lines.append(f"  - {_capped(error['msg'].removeprefix('Value error, '))}")
        else:
            received = error.get("input")
            lines.append(f"  - `{field}`: {_capped(error['msg'])}; received {quote(received)}.")
    return "\n".join(lines)


def _capped(message: str, limit: int = 2 * MAX_QUOTED_CHARS) -> str:
    """A validator's message, which may quote the value itself, cut to `limit` characters."""
    return message if len(message) <= limit else message[:limit] + "..."


_SOURCE_TAGS: set[str] = set()


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and part in _source_tags()


def _source_models() -> tuple[type[BaseModel], ...]:
    inner = get_args(DataSource)[0]
    return get_args(inner) or (inner,)  # Union[X] of one member collapses to X


def _source_tags() -> set[str]:
    if not _SOURCE_TAGS:
        for member in _source_models():
            _SOURCE_TAGS.update(get_args(member.model_fields["format"].annotation))
    return _SOURCE_TAGS


def _allowed_keys(loc: tuple) -> list[str]:
    """Field names of the section at `loc` (a pydantic error location)."""
    model: Any = RunConfig
    for part in loc:
        if _is_union_tag(part):
            model = next(m for m in _source_models()
                         if part in get_args(m.model_fields["format"].annotation))
            continue
        if isinstance(part, int):  # an item of a list of sections (merge inputs)
            continue
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        field = model.model_fields.get(part) if is_model else None
        if field is None:
            return []
        model = _section_type(field.annotation)
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def _section_type(annotation: Any) -> Any:
    """The section model behind `X`, `Annotated[X, ...]`, `list[X]` or `X | None`."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is list:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    members = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) in (Union, UnionType) and len(members) == 1:
        annotation = members[0]
    return annotation


# Keys of a data source that hold paths (relative to the config file's folder).
_SOURCE_PATH_KEYS = ("root", "annotations", "images", "path", "train_annotations",
                     "val_annotations", "test_annotations", "train_images", "val_images",
                     "test_images")


def _resolve_relative_paths(raw: dict, folder: Path) -> dict:
    """Make data paths in a config file relative to the file, not to the working directory."""
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("source"), dict):
        _resolve_source_paths(data["source"], folder)
    for section, key in (("verify", "tflm_source"), ("export", "board")):
        value = (raw.get(section) or {}).get(key) if isinstance(raw.get(section), dict) else None
        is_path = key == "tflm_source" or str(value).endswith((".yaml", ".yml"))
        if isinstance(value, str) and value and is_path and not Path(value).is_absolute():
            raw[section][key] = str((folder / value).resolve())
    return raw


def _resolve_source_paths(source: dict, folder: Path) -> None:
    for key in _SOURCE_PATH_KEYS:
        value = source.get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            source[key] = str((folder / value).resolve())
    for item in source.get("inputs") or []:  # a merge: resolve each input's source as well
        if isinstance(item, dict) and isinstance(item.get("source"), dict):
            _resolve_source_paths(item["source"], folder)
