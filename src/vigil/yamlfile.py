"""Reading a YAML file with the errors every config loader gives (missing, a folder, not UTF-8, invalid YAML), named."""

from __future__ import annotations

import os
from typing import Any

import yaml

from vigil.errors import ConfigError


def read_text(path: str | os.PathLike[str], what: str) -> str:
    """The UTF-8 text at ``path``; a missing file, a folder or other bytes are a ConfigError naming ``what``.

    Examples:
        >>> import tempfile
        >>> read_text(tempfile.gettempdir(), "pipeline file")
        Traceback (most recent call last):
        ...
        vigil.errors.ConfigError: `pipeline file` is a folder, not a file; got '...'
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ConfigError("does not exist", field=what, value=path) from None
    except IsADirectoryError:
        raise ConfigError("is a folder, not a file", field=what, value=path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"is not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})", field=what,
                          value=path, hint="save it as UTF-8") from None  # fmt: skip
    except OSError as exc:
        raise ConfigError(f"can't be read ({exc.strerror or exc})", field=what, value=path) from None


def parse_yaml(text: str, what: str, path: str | os.PathLike[str]) -> Any:
    """The parsed YAML document of ``text`` (read from ``path``); invalid YAML is a ConfigError naming both."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"is not valid YAML: {exc}", field=what, value=os.fspath(path)) from None


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """The parsed document at ``path``; a missing file or invalid YAML is a ConfigError naming ``what`` and the path.

    Examples:
        >>> read_yaml("/nonexistent.yaml", "pipeline file")
        Traceback (most recent call last):
        ...
        vigil.errors.ConfigError: `pipeline file` does not exist; got '/nonexistent.yaml'
    """
    return parse_yaml(read_text(path, what), what, path)
