"""The one error type a user's bad input turns into: it names the key, the value and what is allowed."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from numbers import Real
from typing import Any, Iterator


class ConfigError(ValueError):
    """A configuration value that cannot run; its message is one line meant for the console."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key = key
        self.value = value
        self.allowed = allowed
        shown = "null" if value is None else repr(value)
        super().__init__(f"{key}={shown} is not allowed: {allowed}")


@contextmanager
def exit_2_on_config_error() -> Iterator[None]:
    """Bad input ends a command with one line on stderr and exit code 2: no traceback."""
    try:
        yield
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def is_integer(value: Any) -> bool:
    """An integer as a user means it: YAML's true is not 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number as a user means it: YAML's true is not 1."""
    return isinstance(value, Real) and not isinstance(value, bool)
