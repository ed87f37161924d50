"""Reading a YAML file with the errors every config loader gives: missing file, invalid YAML, both named."""

from __future__ import annotations

import os
from typing import Any

import yaml

from vigil.errors import ConfigError


def read_yaml(path: str | os.PathLike[str], what: str) -> Any:
    """The parsed document at ``path``; a missing file or invalid YAML is a ConfigError naming ``what`` and the path.

    Examples:
        >>> read_yaml("/nonexistent.yaml", "pipeline file")
        Traceback (most recent call last):
        ...
        vigil.errors.ConfigError: `pipeline file` does not exist; got '/nonexistent.yaml'
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError("does not exist", field=what, value=path) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"is not valid YAML: {exc}", field=what, value=path) from None
