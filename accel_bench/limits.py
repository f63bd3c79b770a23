"""What a numeric setting allows beyond its type, kept on its config field (``limited(50, Limit(1))``): the
config's own check and the command line's type check (``steps=abc``, which Hydra refuses before any check
runs) read the same limit and say the same thing about the same key."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional

from .errors import ConfigError, is_integer, is_number

_KEY = "limit"  # the field metadata's key
MAX_SEED = 2**32 - 1  # numpy's and torch's seed range


@dataclass(frozen=True)
class Limit:
    """A setting's lowest value (and highest, where it has one); ``above``/``below``: strictly so."""

    lowest: float
    highest: Optional[float] = None
    integer: bool = True
    above: bool = False
    below: bool = False
    nullable: bool = False
    null_means: str = ""  # said after null, in brackets
    auto: bool = False  # the word auto is allowed too
    multiple: int = 1  # integers only: a multiple of this
    choices: tuple = ()  # integers only: one of these (the bounds then unsaid)
    unit: str = ""  # said instead of "an integer" / "a number"
    meaning: str = ""  # said after the bound, in brackets
    example: str = ""  # said last, after "e.g."

    @property
    def allowed(self) -> str:
        kind = self.unit or (f"a multiple of {self.multiple}" if self.multiple > 1 else None)
        kind = kind or ("an integer" if self.integer else "a number")
        if self.choices:
            bound = "one of " + ", ".join(str(choice) for choice in self.choices)
        elif self.highest is None:
            shown = self.multiple > 1 and self.lowest == self.multiple and not self.above  # every positive multiple
            bound = kind if shown else f"{kind} {'>' if self.above else '>='} {self.lowest:g}"
        elif self.integer and not (self.above or self.below):
            bound = f"{kind} {int(self.lowest)}..{int(self.highest)}"
        else:
            low, high = "([("[not self.above], "])"[self.below]
            bound = f"{kind} in {low}{self.lowest:g}, {self.highest:g}{high}"
        null = f"null ({self.null_means}) or " if self.null_means else "null or "
        said = (null if self.nullable else "") + ("auto or " if self.auto else "") + bound
        return (
            said + (f" ({self.meaning})" if self.meaning else "") + (f", e.g. {self.example}" if self.example else "")
        )

    def holds(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if value == "auto":
            return self.auto
        if not (is_integer(value) if self.integer else is_number(value)):
            return False
        if self.integer and (value % self.multiple or (self.choices and value not in self.choices)):
            return False
        low = value > self.lowest if self.above else value >= self.lowest
        high = self.highest is None or (value < self.highest if self.below else value <= self.highest)
        return low and high


def limited(default: Any, limit: Limit) -> Any:
    """A config dataclass field with ``default`` (``dataclasses.MISSING``: none) whose values ``limit`` bounds."""
    return dataclasses.field(default=default, metadata={_KEY: limit})


def limit_of(schema: Any, key: str) -> Optional[Limit]:
    """The limit on field ``key`` of the config dataclass ``schema``, where it has one."""
    if not dataclasses.is_dataclass(schema):
        return None
    found = [f.metadata.get(_KEY) for f in dataclasses.fields(schema) if f.name == key]
    return found[0] if found else None


def check_limits(section: Any, schema: Any, prefix: str = "", keys: Optional[Iterable[str]] = None) -> None:
    """ConfigError for the first field of ``schema`` (those in ``keys``, else every limited one, in the
    schema's order) whose value in ``section`` (a config section or a dataclass) its limit does not hold."""
    names = list(keys) if keys is not None else [f.name for f in dataclasses.fields(schema) if _KEY in f.metadata]
    limits = {name: limit_of(schema, name) for name in names}
    missing = [name for name, limit in limits.items() if limit is None]
    if missing:
        raise KeyError(f"{schema.__name__}.{missing[0]} has no limit")
    check_values(section, limits, prefix)


def check_values(section: Any, limits: Mapping[str, Limit], prefix: str = "") -> None:
    """ConfigError for the first of ``limits``' keys whose value in ``section`` (a mapping, where a key left
    out is null, or an object with those attributes) its limit does not hold."""
    for name, limit in limits.items():
        value = section.get(name) if isinstance(section, Mapping) else getattr(section, name)
        if not limit.holds(value):
            raise ConfigError(prefix + name, value, limit.allowed)
