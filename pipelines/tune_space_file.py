"""The ``--space`` file of ``jingle tune``: read (YAML or JSON) and parsed into ``Parameter``s.

The file format is ``pipelines/tune_space.py``'s docstring; that module judges the parsed
parameters against the config and searches them. Every refusal here is one
``ConfigError`` line naming the file and the key.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NoReturn

import yaml

from jingle.core.config import ConfigError, SectionedConfig, is_number

if TYPE_CHECKING:  # Optuna loads only when a search is built
    import optuna

DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint", "choice")
FLOAT_DISTRIBUTIONS = ("uniform", "loguniform", "quniform")
TOP_LEVEL_KEYS = ("parameters",)


# ------------------------------------------------------------------ one parameter


@dataclass(frozen=True)
class Parameter:
    """One searched key of the training config.

    Attributes:
        key: the config's dotted key, also the Optuna parameter name.
        distribution: one of ``DISTRIBUTIONS``.
        arguments: ``(low, high)``, ``(low, high, q)`` or the choices.
        when: conditioning key -> the values it must take for this one to be sampled.
    """

    key: str
    distribution: str
    arguments: tuple
    when: Mapping[str, tuple] = field(default_factory=dict)

    def is_active(self, chosen: Mapping[str, Any]) -> bool:
        """Whether the values sampled so far (``chosen``) meet every condition."""
        return all(key in chosen and any(same_value(chosen[key], value) for value in allowed) for key, allowed in self.when.items())

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample this parameter from an Optuna trial."""
        kind, arguments = self.distribution, self.arguments
        if kind == "uniform":
            return trial.suggest_float(self.key, arguments[0], arguments[1])
        if kind == "loguniform":
            return trial.suggest_float(self.key, arguments[0], arguments[1], log=True)
        if kind == "quniform":
            return self.normalize(trial.suggest_float(self.key, arguments[0], arguments[1], step=arguments[2]))
        if kind == "randint":
            return trial.suggest_int(self.key, arguments[0], arguments[1] - 1)  # Optuna's high is included
        return trial.suggest_categorical(self.key, list(arguments))

    def normalize(self, value: Any) -> Any:
        """A sampled value as plain JSON: ``low + k*q`` without float noise (Optuna gives
        0.15000000000000002 for 0.1 + 0.05), NumPy numbers as Python ones."""
        if self.distribution == "quniform":
            low, _, step = self.arguments
            return float(f"{low + round((float(value) - low) / step) * step:.12g}")
        if self.distribution in FLOAT_DISTRIBUTIONS:
            return float(value)
        if self.distribution == "randint":
            return int(value)
        return value

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this parameter can give."""
        if self.distribution == "choice":
            return any(same_value(value, choice) for choice in self.arguments)
        if not is_number(value):
            return False
        low, high = self.arguments[0], self.arguments[1]
        if self.distribution == "randint":
            return isinstance(value, int) and low <= value < high
        if not low <= value <= high:
            return False
        if self.distribution == "quniform":
            steps = (value - low) / self.arguments[2]
            return abs(steps - round(steps)) < 1e-6
        return True

    def extremes(self) -> tuple:
        """The values the config must accept: both ends of a range (as the trial gives
        them: floats for float distributions), every choice."""
        kind, arguments = self.distribution, self.arguments
        if kind == "choice":
            return arguments
        if kind == "randint":
            return tuple(dict.fromkeys((arguments[0], arguments[1] - 1)))
        return (float(arguments[0]), float(arguments[1]))

    def describe(self) -> str:
        """E.g. ``randint 25..150 (high 151 excluded)  when masking.strategy in [temporal, hybrid]``."""
        kind, arguments = self.distribution, self.arguments
        if kind == "choice":
            text = f"choice [{', '.join(_show(value) for value in arguments)}]"
        elif kind == "randint":
            text = f"randint {arguments[0]}..{arguments[1] - 1} (high {arguments[1]} excluded)"
        elif kind == "quniform":
            text = f"quniform [{arguments[0]:g}, {arguments[1]:g}] step {arguments[2]:g}"
        else:
            text = f"{kind} [{arguments[0]:g}, {arguments[1]:g}]"
        for key, allowed in self.when.items():
            text += f"  when {key} in [{', '.join(_show(value) for value in allowed)}]"
        return text


# ------------------------------------------------------------------ reading the file


class _SpaceLoader(yaml.SafeLoader):
    """YAML's safe loader, but a key given twice is an error (plain YAML keeps the last
    silently) and ``1e-4`` is a float (YAML 1.1 reads it as text; it wants ``1.0e-4``)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        self.flatten_mapping(node)
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class names it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"{key} is given twice", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_SpaceLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_space_file(path: str | os.PathLike) -> Any:
    """The parsed YAML (or JSON) of a ``--space`` file, or a one-line ``ConfigError``."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"search space {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"search space {path} is a folder, not a YAML file") from None
    try:
        return yaml.load(text, Loader=_SpaceLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"search space {path} is not valid YAML ({where}{problem})") from None


# ------------------------------------------------------------------ validation


def refuse(source: str, key: str, message: str) -> NoReturn:
    raise ConfigError(f"search space {source}: {key}: {message}")


def parse_parameters(source: str, document: Any, base_config: SectionedConfig) -> tuple[Parameter, ...]:
    if document is None:
        raise ConfigError(f"search space {source} is empty: list the searched keys under 'parameters:'")
    if not isinstance(document, Mapping):
        raise ConfigError(f"search space {source} must be a mapping with 'parameters:', got {type(document).__name__}")
    unknown = sorted(str(key) for key in set(document) - set(TOP_LEVEL_KEYS))
    if unknown:
        raise ConfigError(f"search space {source}: unknown top-level key(s) {unknown}; the one key is 'parameters'")
    entries = document.get("parameters")
    if not entries:
        raise ConfigError(f"search space {source} has no parameters: list them under 'parameters:' as the config's dotted keys")
    if not isinstance(entries, Mapping):
        raise ConfigError(f"search space {source}: 'parameters' must be a mapping of dotted keys, got {type(entries).__name__}")

    leaves, sections = flatten(base_config.to_dict())
    parameters: dict[str, Parameter] = {}
    for key, spec in entries.items():
        _check_key(source, key, leaves, sections, type(base_config))
        parameters[key] = _parse_parameter(source, key, spec, parameters, later=set(entries) - set(parameters) - {key})
    return tuple(parameters.values())


def _check_key(source: str, key: Any, leaves: Mapping[str, Any], sections: set[str], config_class: type[SectionedConfig]) -> None:
    if not isinstance(key, str):
        raise ConfigError(f"search space {source}: parameter {key!r} must be a dotted key such as 'training.learning_rate'")
    if key in leaves:
        return
    name = config_class.__name__
    if key in config_class.MOVED:
        refuse(source, key, f"has moved to {config_class.MOVED[key]}: rename it in the space file")
    if key in sections:
        refuse(source, key, f"is a section of {name}, not a value: name one of its keys, e.g. {next((k for k in leaves if k.startswith(key + '.')), key + '.KEY')}")
    close = difflib.get_close_matches(key, list(leaves), n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; the sections are {sorted({k.split('.')[0] for k in leaves})}"
    refuse(source, key, f"is not a key of {name}{hint}")


def _parse_parameter(source: str, key: str, spec: Any, earlier: Mapping[str, Parameter], *, later: set[str]) -> Parameter:
    if not isinstance(spec, Mapping):
        refuse(source, key, f"must be a mapping such as {{uniform: [low, high]}}, got {spec!r}")
    kinds = [name for name in spec if name != "when"]
    if len(kinds) != 1:
        refuse(source, key, f"needs exactly one distribution of {list(DISTRIBUTIONS)}, got {kinds}")
    kind = kinds[0]
    if kind not in DISTRIBUTIONS:
        refuse(source, key, f"unknown distribution {kind!r}; the distributions are {list(DISTRIBUTIONS)}")
    arguments = _parse_arguments(source, key, kind, spec[kind])
    when = _parse_when(source, key, spec.get("when"), earlier, later) if "when" in spec else {}
    return Parameter(key=key, distribution=kind, arguments=arguments, when=when)


def _parse_arguments(source: str, key: str, kind: str, arguments: Any) -> tuple:
    if kind == "choice":
        if not isinstance(arguments, list) or not arguments:
            refuse(source, key, f"choice needs a non-empty list of values, got {arguments!r}")
        for value in arguments:
            if not (value is None or isinstance(value, (bool, int, float, str))):
                refuse(source, key, f"choice values must be numbers, strings, true/false or null (Optuna's categorical), got {value!r}")
        for index, value in enumerate(arguments):
            if any(same_value(value, other) for other in arguments[:index]):
                refuse(source, key, f"choice lists {value!r} twice")
        return tuple(arguments)

    shape = {"quniform": "[low, high, q]"}.get(kind, "[low, high]")
    arity = 3 if kind == "quniform" else 2
    if not isinstance(arguments, list) or len(arguments) != arity:
        refuse(source, key, f"{kind} needs {shape}, got {arguments!r}")
    if kind == "randint":
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in arguments):
            refuse(source, key, f"randint needs whole numbers [low, high] (high excluded), got {arguments!r}")
    elif not all(is_number(value) and math.isfinite(value) for value in arguments):
        refuse(source, key, f"{kind} needs finite numbers {shape}, got {arguments!r}")
    low, high = arguments[0], arguments[1]
    if low >= high:
        excluded = " (high is excluded, so it must be at least low + 1)" if kind == "randint" else ""
        refuse(source, key, f"{kind} needs low < high, got {arguments!r}{excluded}")
    if kind == "loguniform" and low <= 0:
        refuse(source, key, f"loguniform needs 0 < low, got {arguments!r}")
    if kind == "quniform":
        step = arguments[2]
        steps = (high - low) / step if step > 0 else math.nan
        if not step > 0:
            refuse(source, key, f"quniform needs a step q > 0, got {arguments!r}")
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            refuse(source, key, f"quniform's high - low ({high - low:g}) must be a whole number of steps q ({step:g}), got {arguments!r}")
    return tuple(arguments)


def _parse_when(source: str, key: str, when: Any, earlier: Mapping[str, Parameter], later: set[str]) -> dict[str, tuple]:
    if not isinstance(when, Mapping) or not when:
        refuse(source, key, f"when needs a mapping {{choice.key: value or [values]}}, got {when!r}")
    conditions: dict[str, tuple] = {}
    for other, values in when.items():
        if other in later:  # define-by-run samples in file order: the condition's value must be known
            refuse(source, key, f"when names {other}, which comes after it: list a condition's parameter first")
        if other not in earlier:
            place = "is this parameter itself" if other == key else "is not a parameter of this space"
            refuse(source, key, f"when names {other}, which {place}: a condition must name a choice parameter listed before it")
        condition = earlier[other]
        if condition.distribution != "choice":
            refuse(source, key, f"when names {other}, a {condition.distribution} parameter: a condition must name a choice parameter")
        allowed = values if isinstance(values, list) else [values]
        if not allowed:
            refuse(source, key, f"when gives {other} no values")
        for value in allowed:
            if not condition.contains(value):
                refuse(source, key, f"when needs {other} = {value!r}, which it cannot take (its choices: {list(condition.arguments)})")
        conditions[other] = tuple(allowed)
    return conditions


def flatten(tree: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, Any], set[str]]:
    """(dotted key -> value for every leaf, the dotted keys of every mapping)."""
    leaves: dict[str, Any] = {}
    sections: set[str] = set()
    for name, value in tree.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, Mapping):
            sections.add(dotted)
            sub_leaves, sub_sections = flatten(value, dotted + ".")
            leaves.update(sub_leaves)
            sections |= sub_sections
        else:
            leaves[dotted] = value
    return leaves, sections


def same_value(first: Any, second: Any) -> bool:
    """Equal as config values: true, false and null match only themselves (to Python
    ``True == 1``); numbers compare by value (1 and 1.0 are one number to the config)."""
    if isinstance(first, bool) or isinstance(second, bool) or first is None or second is None:
        return first is second or (type(first) is type(second) and first == second)
    return first == second


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
