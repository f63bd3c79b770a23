"""The command line's overrides, checked before Hydra starts: what Hydra would refuse in several lines
with exit code 1, or accept and ignore, becomes one ``ConfigError`` line (exit 2) naming the key.

Shared by run.py, post-process and the evaluator (each checks its own config's overrides) and by the
search sweeper (its screening overrides).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from omegaconf import DictConfig, ListConfig

from .config import CONF_DIR, compose_config, group_options
from .errors import ConfigError
from .limits import limit_of
from .sweep.limits import launcher_limit

_ELEMENT_KINDS = {int: "integers", float: "numbers", str: "strings", bool: "true or false"}
_NODE_KINDS = {
    "IntegerNode": "an integer",
    "FloatNode": "a number",
    "BooleanNode": "true or false",
    "StringNode": "a string",
    "ListConfig": "a list, e.g. [a,b]",
}


def check_overrides(arguments: Sequence[str], config_name: str) -> None:
    """Raise ConfigError for a command-line override that Hydra would refuse in several lines with
    exit code 1: a config group's option with no file (``scheduler=euler``), a value its typed key
    cannot hold (``steps=abc``), a key the config does not have. It runs before Hydra, on the raw
    arguments, and composes every choice of a sweep (``batch_size=2,2.5``), so nothing has run yet.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import ConfigCompositionException, HydraException

    parser = OverridesParser.create()
    parsed = []
    positional, config_dir = _command_line(arguments)
    for arg in positional:
        try:
            parsed.append((arg, parser.parse_override(arg)))
        except HydraException as error:
            reason = " ".join(str(error).split())
            allowed = f"key=value, ~key or +key=value in Hydra's override grammar ({reason})"
            raise ConfigError("override", arg, allowed) from None
    for arg, override in parsed:
        if override.is_delete() and not _hydras(override.key_or_group):
            raise ConfigError("override", arg, "a setting to change (key=value), not to delete: every one is read")
    if not _multirun(arguments):
        _check_one_run(parsed, config_name)
    choices = []  # per override: the lines it composes as, one per choice of a sweep
    for arg, override in parsed:
        if override.value_type in (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP, ValueType.RANGE_SWEEP):
            choices.append([f"{override.get_key_element()}={value}" for value in override.sweep_string_iterator()])
        elif override.value_type != ValueType.GLOB_CHOICE_SWEEP:  # a glob: Hydra resolves it against the group
            choices.append([arg])
    # Hydra's own groups gain options from --config-dir and hydra.searchpath: those are Hydra's to judge
    hydra_groups = config_dir is None and not any(o.key_or_group == "hydra.searchpath" for _, o in parsed)
    for lines in choices:
        _check_group_option(parser.parse_overrides(lines), hydra_groups)
    first = [lines[0] for lines in choices]
    _check_added_keys(parser.parse_overrides(first), first, config_name)
    variants = [first] + [first[:i] + [line] + first[i + 1 :] for i, lines in enumerate(choices) for line in lines[1:]]
    for overrides in variants:
        try:
            composed = compose_config(config_name, overrides)
        except ConfigCompositionException as error:
            refused = composition_error(error, overrides)
            if refused is not None:
                raise refused from None
            return  # anything else: Hydra's own message
        _check_booleans(parser.parse_overrides(overrides), composed)


def composition_error(error: Exception, overrides: Sequence[str]) -> Optional[ConfigError]:
    """The one-line ConfigError for Hydra's refusal to compose ``overrides``: a value its typed key
    cannot hold, a key the config does not have; None for anything else."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

    cause = error.__cause__
    values = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(list(overrides))}
    if isinstance(cause, ValidationError) and type(cause.child_node).__name__ in _NODE_KINDS:
        kind = _NODE_KINDS[type(cause.child_node).__name__]
        limit = limit_of(cause.parent_node._metadata.object_type, cause.key) or launcher_limit(cause.full_key)
        allowed = limit.allowed if limit else kind + (" or null" if cause.child_node._is_optional() else "")
        return ConfigError(cause.full_key, cause.value, allowed)
    if isinstance(cause, ValidationError) and isinstance(cause.child_node, DictConfig):  # a whole section
        known = " | ".join(sorted(str(key) for key in cause.child_node.keys()))
        return ConfigError(cause.full_key, cause.value, f"a section: set its keys ({cause.full_key}.KEY=...: {known})")
    if isinstance(cause, ValidationError) and isinstance(cause.parent_node, ListConfig):  # an element of a typed list
        key = cause.full_key.rpartition("[")[0]
        element = _ELEMENT_KINDS.get(getattr(cause.parent_node._metadata, "element_type", None), "values of its type")
        return ConfigError(key, values.get(key, cause.value), f"a list of {element}")
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and isinstance(cause.parent_node, DictConfig):
        known = " | ".join(sorted(str(key) for key in cause.parent_node.keys() if key != "hydra"))
        return ConfigError(
            cause.full_key, values.get(cause.full_key), f"no such setting; the settings here are {known}"
        )
    return None


def _check_booleans(overrides: Sequence[Any], composed: DictConfig) -> None:
    """ConfigError for a true-or-false setting given anything but true or false: OmegaConf would take
    ``save_images=2`` or ``interleave=yes`` as true and the run would go on with a guess."""
    from omegaconf.nodes import BooleanNode

    for override in overrides:
        key = override.key_or_group
        if override.is_delete() or _hydras(key) or "/" in key:
            continue
        parent, leaf = _parent(composed, key)
        node = parent._get_node(leaf) if parent is not None and leaf in parent else None
        value = override.value()
        spelt = isinstance(value, str) and value.lower() in ("true", "false")  # quoted: 'x="true"'
        if isinstance(node, BooleanNode) and not isinstance(value, bool) and value is not None and not spelt:
            raise ConfigError(key, value, "true or false" + (" or null" if node._is_optional() else ""))


def _parent(cfg: DictConfig, key: str) -> tuple[Optional[DictConfig], str]:
    """The section a dotted key's last part lives in (None under a list or a value), and that part."""
    from omegaconf import OmegaConf

    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    return (parent if isinstance(parent, DictConfig) else None), leaf


def _command_line(arguments: Sequence[str]) -> tuple[list[str], Optional[str]]:
    """(the arguments Hydra's command line takes as overrides, its ``--config-dir``): not its flags,
    nor a flag's value (``--config-name x``, ``--info config``)."""
    import argparse

    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    try:
        known, unknown = parser.parse_known_args(list(arguments))
    except argparse.ArgumentError:
        return [], None  # a flag without its value: Hydra's own usage line says so
    return list(known.overrides) + [arg for arg in unknown if not arg.startswith("-")], known.config_dir


def _hydras(key: str) -> bool:
    """Whether an override's key is Hydra's own (``hydra.*``, ``hydra/<group>``): Hydra judges those."""
    return key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _multirun(arguments: Sequence[str]) -> bool:
    """Whether Hydra runs these arguments as a sweep: ``-m``, ``--multirun`` (or its prefix, as argparse
    takes it) or ``hydra.mode=MULTIRUN``."""
    return any(
        arg == "-m" or (arg.startswith("--m") and "--multirun".startswith(arg)) or arg == "hydra.mode=MULTIRUN"
        for arg in arguments
    )


_SWEEP_ONLY = ("sweep", "hydra/sweeper", "hydra/launcher")  # what only a sweep reads


def _check_one_run(parsed: Sequence[tuple[str, Any]], config_name: str) -> None:
    """ConfigError for what only a sweep reads, given to one run: several values of a key (Hydra: several
    lines, exit 1) or a named sweep, sweeper or launcher (Hydra: ignored, one run with the defaults)."""
    from hydra.core.override_parser.types import ValueType

    sweeps = (ValueType.SIMPLE_CHOICE_SWEEP, ValueType.CHOICE_SWEEP, ValueType.RANGE_SWEEP, ValueType.GLOB_CHOICE_SWEEP)
    for arg, override in parsed:
        key, value = override.get_key_element().lstrip("+~"), arg.split("=", 1)[-1]
        if config_name != "config":
            if override.value_type in sweeps:
                raise ConfigError(key, value, "one value (a list is written [a,b])")
            continue
        if override.value_type in sweeps:
            raise ConfigError(key, value, f"one value for one run; a sweep over them: python run.py -m {arg}")
        if override.key_or_group in _SWEEP_ONLY:
            raise ConfigError(key, value, f"a sweep's choice, read only with -m: python run.py -m {arg} ...")


def _check_added_keys(overrides: Sequence[Any], lines: Sequence[str], config_name: str) -> None:
    """ConfigError for ``+key=value`` or ``++key=value`` on a key our config does not have (Hydra adds
    it and nothing reads it: a misspelt setting would run with its default) and for ``+key=value`` on
    one it has (Hydra: several lines, exit 1). Config groups (``+sweep=NAME``) and ``hydra.*`` are Hydra's."""

    def ours(override: Any) -> bool:
        key = override.key_or_group
        return (
            (override.is_add() or override.is_force_add())
            and not _hydras(key)
            and "/" not in key
            and not (CONF_DIR / key).is_dir()
        )

    added = [(line, override) for line, override in zip(lines, overrides) if ours(override)]
    if not added:
        return
    without = [line for line in lines if line not in {line for line, _ in added}]
    try:
        base = compose_config(config_name, without)
    except Exception:  # the other overrides' own error: the variants' check reports it
        return
    for _, override in added:
        key = override.key_or_group
        parent, leaf = _parent(base, key)
        if parent is None:
            continue  # under a list or a value: Hydra's to judge
        if leaf not in parent:
            known = " | ".join(sorted(str(k) for k in parent.keys() if k != "hydra"))
            raise ConfigError(key, override.value(), f"no such setting; the settings here are {known}")
        if override.is_add():
            raise ConfigError(key, override.value(), f"already a setting: set it without the '+' ({key}=...)")


def _check_group_option(overrides: Sequence[Any], hydra_groups: bool) -> None:
    """ConfigError for an option of one of our config groups, or of Hydra's (``hydra_groups``), that has
    no config (Hydra: several lines, exit 1)."""
    for override in overrides:
        group = override.key_or_group
        if override.is_delete():
            continue
        if group.startswith("hydra/"):  # Hydra's own groups, with the plug-ins' options and ours
            options = _hydra_group_options(group) if hydra_groups else []
        elif "/" not in group and (CONF_DIR / group).is_dir():
            options = group_options(group)
        else:
            continue
        if not options:
            continue  # not a group Hydra knows: its own message says so
        value = override.value()
        for chosen in value if isinstance(value, list) else [value]:  # +sweep=[a,b]: several options of a group
            if chosen is not None and chosen not in options:  # null deselects a group: Hydra's to judge
                raise ConfigError(override.key_or_group, chosen, " | ".join(options))


def _hydra_group_options(group: str) -> list[str]:
    """A Hydra group's options (``hydra/launcher`` -> ``basic``, ``slurm``, ...) as Hydra finds them,
    search-path plug-ins included."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):  # as compose_config: the state is restored
        return GlobalHydra.instance().config_loader().get_group_options(group)
