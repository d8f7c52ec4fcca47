"""Reading and writing configs: named YAML files, explicit YAML/JSON files, ``field.sub=value``
overrides and the run directory's ``config.json``.

Named configs (presets) are YAML files shipped inside the package, ``acl_tf/configs/presets/
<kind>/NAME.yaml``, holding only the fields that differ from the dataclass defaults; a command line
applies ``key.sub=value`` overrides on top, and the resolved config is written into the run
directory as ``config.json``. Values are typed by the dataclass annotations
(:mod:`acl_tf.configs.fields`); path fields (``DataSource``, ``FilePath``) are made absolute on
load, looked up in the current directory and then beside the config file
(:func:`acl_tf.core.paths.resolve_location`), so a run directory's config works from anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from acl_tf.configs.fields import field_types, from_dict, location_of, to_dict
from acl_tf.core import run_dir
from acl_tf.core.errors import ConfigError
from acl_tf.core.io import write_json_atomic
from acl_tf.core.paths import resolve_location

__all__ = ["CONFIG_ROOT", "apply_overrides", "available_configs", "config_path", "load_config",
           "load_run_config", "parse_override", "read_config", "resolve_locations",
           "write_config"]

CONFIG_ROOT = Path(__file__).resolve().parent / "presets"


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.learning_rate=0.5"`` -> (["optim", "learning_rate"], 0.5) (value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"Override {text!r} must look like field.subfield=value.")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"Override {text!r} has no field name.")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"Override {text!r}: cannot parse value: {err}") from err
    return key.split("."), value


def apply_overrides(values: dict, overrides: Iterable[str]) -> dict:
    """Returns a copy of the nested dict ``values`` with each ``a.b=value`` override applied."""
    values = json.loads(json.dumps(values))
    for text in overrides:
        path, value = parse_override(text)
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override {text!r}: {part!r} is not a section.")
        node[path[-1]] = value
    return values


def config_path(kind: str, name_or_path: str) -> Path:
    """Resolves a config name (a preset, ``presets/<kind>/NAME.yaml``) or an explicit file
    path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".json") or os.sep in name_or_path:
        if not path.is_file():
            raise ConfigError(f"Config file {name_or_path!r} does not exist.")
        return path
    path = CONFIG_ROOT / kind / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"Unknown {kind} config {name_or_path!r}; available: "
                          f"{available_configs(kind)}.")
    return path


def available_configs(kind: str) -> list[str]:
    """The names of the shipped configs (presets) of ``kind``."""
    return sorted(p.stem for p in (CONFIG_ROOT / kind).glob("*.yaml"))


def read_values(path: Path) -> dict:
    """The field mapping of a YAML/JSON config file (empty for an empty file)."""
    try:
        with open(path) as f:
            values = (json.load(f) if path.suffix == ".json" else yaml.safe_load(f)) or {}
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"Cannot read config {str(path)!r}: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"Config {str(path)!r} must hold a mapping of fields.")
    return values


def load_config(cls, kind: str, name_or_path: Optional[str] = None,
                overrides: Iterable[str] = ()):
    """Defaults of ``cls`` <- named config or file <- overrides, validated, with path fields
    resolved against the current directory, then the config file's folder."""
    values: dict = {}
    bases = [Path.cwd()]
    if name_or_path:
        path = config_path(kind, name_or_path)
        values = read_values(path)
        bases.append(path.resolve().parent)
    return resolve_locations(from_dict(cls, apply_overrides(values, overrides)), bases)


def resolve_locations(config, bases, prefix: str = ""):
    """A copy of ``config`` with every path field (:class:`~acl_tf.configs.fields.Location`),
    in nested sections too, resolved by :func:`~acl_tf.core.paths.resolve_location`."""
    changes = {}
    for name, tp in field_types(type(config)).items():
        value = getattr(config, name)
        if dataclasses.is_dataclass(value):
            resolved = resolve_locations(value, bases, f"{prefix}{name}.")
        elif (location := location_of(tp)) is not None and isinstance(value, str):
            resolved = resolve_location(value, bases, prefix + name, dataset=location.dataset)
        else:
            continue
        if resolved is not value and resolved != value:
            changes[name] = resolved
    return dataclasses.replace(config, **changes) if changes else config


def load_run_config(cls, kind: str, name_or_path: Optional[str], overrides: Iterable[str] = (),
                    model_dir=None, resume: bool = False):
    """The config of a run: with ``resume``, the run directory's own ``config.json`` (when it has
    one) instead of ``name_or_path``; then ``overrides``."""
    saved = Path(model_dir) / run_dir.CONFIG if model_dir is not None else None
    if resume and saved is not None and saved.is_file():
        name_or_path = str(saved)
    return load_config(cls, kind, name_or_path, overrides)


def write_config(config, path) -> None:
    """Writes the resolved config as JSON, atomically."""
    write_json_atomic(path, to_dict(config), indent=2, sort_keys=True)


def read_config(cls, path):
    """Reads a ``config.json`` written by :func:`write_config`."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"Cannot read config {str(path)!r}: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"Config {str(path)!r} must hold a mapping of fields.")
    return from_dict(cls, values)
