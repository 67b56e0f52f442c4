"""Search spaces for ``jingle tune``: YAML overlays on a training config, searched define-by-run.

A space names the training config's own dotted keys (the ones ``--override`` takes), each
with a distribution; every key it leaves out keeps the base config's value. There is no
second schema: a key the config does not have, or a value its validators refuse, stops
the tune before anything starts, with one line naming the space file and the key.

File format (YAML; JSON is YAML too, so a ``.json`` file reads the same)::

    # overlay on the training config: dotted keys of its own sections
    parameters:
      losses.corr_weight: {loguniform: [0.01, 1.0]}
      training.learning_rate: {loguniform: [1.0e-4, 3.0e-3]}
      masking.strategy: {choice: [none, temporal, frequency, hybrid]}
      masking.temporal_segment: {randint: [25, 151], when: {masking.strategy: [temporal, hybrid]}}
      masking.freq_split: {quniform: [0.1, 0.6, 0.05], when: {masking.strategy: frequency}}

``parameters`` is the one top-level key. Each entry is ``dotted.key: {DISTRIBUTION: ARGS}``,
optionally with ``when``:

- ``uniform: [low, high]``: a float in [low, high].
- ``loguniform: [low, high]``: a float in [low, high], uniform in log space (0 < low).
- ``quniform: [low, high, q]``: a float ``low + k*q`` for whole k, both ends included;
  ``high - low`` must be a whole number of steps (Optuna's ``step``; Ray's ``tune.quniform``
  rounds to multiples of q instead, which is the same when low is one).
- ``randint: [low, high]``: an integer with **high excluded**, as Ray's ``tune.randint``:
  ``randint: [25, 151]`` gives 25 ... 150.
- ``choice: [a, b, ...]``: one of the listed values (numbers, strings, true/false, null).

Float distributions give floats even for whole-number bounds: a key the config wants as an
integer (``training.epochs``) needs ``randint`` or ``choice``, and the config says so.

``when: {other.key: value}`` or ``when: {other.key: [value, ...]}`` samples the parameter
only when ``other.key``, a ``choice`` parameter listed *earlier* in the file, took one of
those values (several keys: all must hold). A parameter whose condition fails is not
sampled and the trial runs with the base config's value. Conditions chain: a parameter
conditional on a conditional parameter is sampled only when both conditions hold.

Validation, before any trial: the file's shape, every key against the config class (the
base config's dict, nested keys included, moved keys named), every distribution's
arguments, every ``when``; then the config's own validators judge each parameter's
extreme values and each choice on the base config (under the conditions that make it
active), and every pair of parameters' extremes together, so a cross-key rule such as
``fade_frames < temporal_segment`` or ``level_min <= level_max`` is found here, not as a
failed trial.

Searching: ``SearchSpace.suggest`` is the define-by-run function that Ray's
``OptunaSearch(space=...)`` calls with an ``optuna.Trial``; Optuna's parameter names are
the dotted keys, and Ray hands the trial the flat ``{dotted key: value}`` dict (it splits
names on ``"/"`` only). ``make_searcher`` builds that searcher: random search is Optuna's
``RandomSampler(seed)``, ``optuna`` its ``TPESampler(seed)``; the same seed gives the same
sequence of configs.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NoReturn, Sequence

import yaml

from jingle.core.config import ConfigError, SectionedConfig, is_number

if TYPE_CHECKING:  # Ray and Optuna load only when a search is built
    import optuna
    from ray.tune.search.optuna import OptunaSearch

DISTRIBUTIONS = ("uniform", "loguniform", "quniform", "randint", "choice")
FLOAT_DISTRIBUTIONS = ("uniform", "loguniform", "quniform")
SEARCHES = ("random", "optuna")  # --search: Optuna's RandomSampler or its TPESampler
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
        return all(key in chosen and any(_same(chosen[key], value) for value in allowed) for key, allowed in self.when.items())

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
            return any(_same(value, choice) for choice in self.arguments)
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


# ------------------------------------------------------------------ the space


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space over one training config.

    Attributes:
        source: where it was read from (named in every error).
        parameters: in file order, which is the define-by-run order (a conditioning
            parameter before those it conditions).
        base_config: the config every trial starts from.
    """

    source: str
    parameters: tuple[Parameter, ...]
    base_config: SectionedConfig

    @classmethod
    def from_file(cls, path: str | os.PathLike, config_class: type[SectionedConfig],
                  base_config: SectionedConfig | None = None) -> SearchSpace:
        """Read and validate a space file (YAML or JSON) against ``config_class`` and
        ``base_config`` (the class's defaults when None); any problem is a one-line
        ``ConfigError`` naming the file and the key."""
        return cls.from_dict(read_space_file(path), config_class, base_config, source=str(path))

    @classmethod
    def from_dict(cls, document: Any, config_class: type[SectionedConfig],
                  base_config: SectionedConfig | None = None, *, source: str = "<dict>") -> SearchSpace:
        """Validate a parsed space document (``{"parameters": {...}}``)."""
        if base_config is None:
            base_config = config_class()
        elif not isinstance(base_config, config_class):
            raise TypeError(f"base_config is a {type(base_config).__name__}, not a {config_class.__name__}")
        parameters = _parse_parameters(source, document, base_config)
        space = cls(source=source, parameters=parameters, base_config=base_config)
        _check_against_config(space)
        return space

    @property
    def keys(self) -> tuple[str, ...]:
        """Every parameter's dotted key, in file order (e.g. a trials.csv header)."""
        return tuple(parameter.key for parameter in self.parameters)

    def parameter(self, key: str) -> Parameter:
        """The parameter of a dotted key (``KeyError`` when the space has none)."""
        for parameter in self.parameters:
            if parameter.key == key:
                return parameter
        raise KeyError(key)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The define-by-run function for ``OptunaSearch(space=space.suggest)``: samples
        every parameter whose conditions hold, in file order, and returns the overrides
        ``{dotted key: value}`` (Ray takes the returned values over the ones it captured
        from ``trial.suggest_*``, so a quniform value arrives without float noise)."""
        chosen: dict[str, Any] = {}
        for parameter in self.parameters:
            if parameter.is_active(chosen):
                chosen[parameter.key] = parameter.suggest(trial)
        return chosen

    def overrides(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The dotted overrides in a trial's config (flat, as ``suggest`` and Ray give it):
        the space's active keys in file order, as plain JSON values; other keys (a
        driver's own constants) are left out, and so is a key whose condition fails."""
        chosen: dict[str, Any] = {}
        for parameter in self.parameters:
            if not parameter.is_active(chosen):
                continue
            if parameter.key not in params:
                raise KeyError(f"the trial's config has no {parameter.key}, which {self.source} samples here")
            chosen[parameter.key] = parameter.normalize(params[parameter.key])
        return chosen

    def config(self, params: Mapping[str, Any]) -> SectionedConfig:
        """The trial's training config: the base config with the trial's overrides."""
        return self.base_config.with_overrides(self.overrides(params))

    def sample(self, count: int, *, seed: int) -> list[dict[str, Any]]:
        """``count`` overrides drawn as random search draws them (Optuna's
        ``RandomSampler(seed)``): what a dry run can show; the same seed, the same list."""
        import optuna

        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        return [self.suggest(study.ask()) for _ in range(count)]

    def describe(self) -> str:
        """A few lines for the run's summary: one per parameter."""
        width = max(len(key) for key in self.keys)
        lines = [f"search space {self.source}: {len(self.parameters)} parameters over {type(self.base_config).__name__}"]
        lines += [f"  {parameter.key:<{width}}  {parameter.describe()}" for parameter in self.parameters]
        return "\n".join(lines)


def make_searcher(space: SearchSpace, *, search: str = "random", seed: int = 0, metric: str, mode: str,
                  debug: bool = False) -> OptunaSearch:
    """Ray's ``OptunaSearch`` over the space, define-by-run: ``random`` draws with Optuna's
    ``RandomSampler(seed)``, ``optuna`` with its ``TPESampler(seed)`` (random for its first
    10 trials, then guided by the finished ones). ASHA stops trials; Optuna prunes none.
    Optuna's INFO lines ("A new study created in memory ...") show only with ``debug``."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    if search not in SEARCHES:
        raise ConfigError(f"--search must be one of {list(SEARCHES)}, got {search!r}")
    optuna.logging.set_verbosity(optuna.logging.INFO if debug else optuna.logging.WARNING)
    sampler = optuna.samplers.RandomSampler(seed=seed) if search == "random" else optuna.samplers.TPESampler(seed=seed)
    return OptunaSearch(space=space.suggest, metric=metric, mode=mode, sampler=sampler)


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


def _refuse(source: str, key: str, message: str) -> NoReturn:
    raise ConfigError(f"search space {source}: {key}: {message}")


def _parse_parameters(source: str, document: Any, base_config: SectionedConfig) -> tuple[Parameter, ...]:
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

    leaves, sections = _flatten(base_config.to_dict())
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
        _refuse(source, key, f"has moved to {config_class.MOVED[key]}: rename it in the space file")
    if key in sections:
        _refuse(source, key, f"is a section of {name}, not a value: name one of its keys, e.g. {next((k for k in leaves if k.startswith(key + '.')), key + '.KEY')}")
    close = difflib.get_close_matches(key, list(leaves), n=1)
    hint = f"; did you mean {close[0]}?" if close else f"; the sections are {sorted({k.split('.')[0] for k in leaves})}"
    _refuse(source, key, f"is not a key of {name}{hint}")


def _parse_parameter(source: str, key: str, spec: Any, earlier: Mapping[str, Parameter], *, later: set[str]) -> Parameter:
    if not isinstance(spec, Mapping):
        _refuse(source, key, f"must be a mapping such as {{uniform: [low, high]}}, got {spec!r}")
    kinds = [name for name in spec if name != "when"]
    if len(kinds) != 1:
        _refuse(source, key, f"needs exactly one distribution of {list(DISTRIBUTIONS)}, got {kinds}")
    kind = kinds[0]
    if kind not in DISTRIBUTIONS:
        _refuse(source, key, f"unknown distribution {kind!r}; the distributions are {list(DISTRIBUTIONS)}")
    arguments = _parse_arguments(source, key, kind, spec[kind])
    when = _parse_when(source, key, spec.get("when"), earlier, later) if "when" in spec else {}
    return Parameter(key=key, distribution=kind, arguments=arguments, when=when)


def _parse_arguments(source: str, key: str, kind: str, arguments: Any) -> tuple:
    if kind == "choice":
        if not isinstance(arguments, list) or not arguments:
            _refuse(source, key, f"choice needs a non-empty list of values, got {arguments!r}")
        for value in arguments:
            if not (value is None or isinstance(value, (bool, int, float, str))):
                _refuse(source, key, f"choice values must be numbers, strings, true/false or null (Optuna's categorical), got {value!r}")
        for index, value in enumerate(arguments):
            if any(_same(value, other) for other in arguments[:index]):
                _refuse(source, key, f"choice lists {value!r} twice")
        return tuple(arguments)

    shape = {"quniform": "[low, high, q]"}.get(kind, "[low, high]")
    arity = 3 if kind == "quniform" else 2
    if not isinstance(arguments, list) or len(arguments) != arity:
        _refuse(source, key, f"{kind} needs {shape}, got {arguments!r}")
    if kind == "randint":
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in arguments):
            _refuse(source, key, f"randint needs whole numbers [low, high] (high excluded), got {arguments!r}")
    elif not all(is_number(value) and math.isfinite(value) for value in arguments):
        _refuse(source, key, f"{kind} needs finite numbers {shape}, got {arguments!r}")
    low, high = arguments[0], arguments[1]
    if low >= high:
        excluded = " (high is excluded, so it must be at least low + 1)" if kind == "randint" else ""
        _refuse(source, key, f"{kind} needs low < high, got {arguments!r}{excluded}")
    if kind == "loguniform" and low <= 0:
        _refuse(source, key, f"loguniform needs 0 < low, got {arguments!r}")
    if kind == "quniform":
        step = arguments[2]
        steps = (high - low) / step if step > 0 else math.nan
        if not step > 0:
            _refuse(source, key, f"quniform needs a step q > 0, got {arguments!r}")
        if abs(steps - round(steps)) > 1e-9 * max(1.0, steps):
            _refuse(source, key, f"quniform's high - low ({high - low:g}) must be a whole number of steps q ({step:g}), got {arguments!r}")
    return tuple(arguments)


def _parse_when(source: str, key: str, when: Any, earlier: Mapping[str, Parameter], later: set[str]) -> dict[str, tuple]:
    if not isinstance(when, Mapping) or not when:
        _refuse(source, key, f"when needs a mapping {{choice.key: value or [values]}}, got {when!r}")
    conditions: dict[str, tuple] = {}
    for other, values in when.items():
        if other in later:  # define-by-run samples in file order: the condition's value must be known
            _refuse(source, key, f"when names {other}, which comes after it: list a condition's parameter first")
        if other not in earlier:
            place = "is this parameter itself" if other == key else "is not a parameter of this space"
            _refuse(source, key, f"when names {other}, which {place}: a condition must name a choice parameter listed before it")
        condition = earlier[other]
        if condition.distribution != "choice":
            _refuse(source, key, f"when names {other}, a {condition.distribution} parameter: a condition must name a choice parameter")
        allowed = values if isinstance(values, list) else [values]
        if not allowed:
            _refuse(source, key, f"when gives {other} no values")
        for value in allowed:
            if not condition.contains(value):
                _refuse(source, key, f"when needs {other} = {value!r}, which it cannot take (its choices: {list(condition.arguments)})")
        conditions[other] = tuple(allowed)
    return conditions


def _check_against_config(space: SearchSpace) -> None:
    """Let the config's own validators judge each parameter's extremes and every pair's,
    each under conditions that make it active (the rest of the config as the base's)."""
    source, base = space.source, space.base_config
    requirements = _requirements(space.parameters)
    leaves, _ = _flatten(base.to_dict())

    for parameter in space.parameters:
        for value in parameter.extremes():
            refusal = _refusal(base, {parameter.key: value}, [requirements[parameter.key]])
            if refusal is not None:
                context, error = refusal
                hint = ""
                base_value = leaves[parameter.key]
                if parameter.distribution in FLOAT_DISTRIBUTIONS and isinstance(base_value, int) and not isinstance(base_value, bool):
                    hint = f"; {parameter.distribution} gives floats: use randint or choice for a whole-number key"
                _refuse(source, parameter.key, f"the config refuses {value!r}{_context(context)}: {error}{hint}")

    for first, second in itertools.combinations(space.parameters, 2):
        for first_value, second_value in itertools.product(first.extremes(), second.extremes()):
            assignment = {first.key: first_value, second.key: second_value}
            refusal = _refusal(base, assignment, [requirements[first.key], requirements[second.key]])
            if refusal is not None:
                context, error = refusal
                raise ConfigError(
                    f"search space {source}: {first.key}={first_value!r} with {second.key}={second_value!r}{_context(context)}: "
                    f"the config refuses the pair: {error}"
                )


def _requirements(parameters: Sequence[Parameter]) -> dict[str, dict[str, tuple]]:
    """Per key, the values each conditioning key must take for it to be sampled, through
    chains of conditions (a conditioning parameter comes earlier, so it is known)."""
    requirements: dict[str, dict[str, tuple]] = {}
    for parameter in parameters:
        needs: dict[str, tuple] = {}
        for other, allowed in parameter.when.items():
            needs = _intersect(needs, {**requirements[other], other: allowed})
        requirements[parameter.key] = needs
    return requirements


def _refusal(base: SectionedConfig, assignment: Mapping[str, Any], requirements: Sequence[Mapping[str, tuple]]):
    """None when the config takes ``assignment`` under every way of meeting the
    requirements (or it can never be sampled together); else (context, error)."""
    needs: dict[str, tuple] = {}
    for requirement in requirements:
        needs = _intersect(needs, requirement)
    if any(not allowed for allowed in needs.values()):
        return None  # never active together
    if any(key in needs and not any(_same(value, allowed) for allowed in needs[key]) for key, value in assignment.items()):
        return None  # this value switches the other parameter off
    free = [key for key in needs if key not in assignment]
    for values in itertools.product(*(needs[key] for key in free)):
        context = dict(zip(free, values))
        try:
            base.with_overrides({**context, **assignment})
        except (ValueError, TypeError) as error:  # ConfigError is a ValueError
            return context, str(error)
    return None


def _intersect(first: Mapping[str, tuple], second: Mapping[str, tuple]) -> dict[str, tuple]:
    merged = dict(first)
    for key, allowed in second.items():
        merged[key] = tuple(value for value in merged[key] if any(_same(value, other) for other in allowed)) if key in merged else allowed
    return merged


def _context(context: Mapping[str, Any]) -> str:
    return f" (with {', '.join(f'{key}={value!r}' for key, value in context.items())})" if context else ""


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, Any], set[str]]:
    """(dotted key -> value for every leaf, the dotted keys of every mapping)."""
    leaves: dict[str, Any] = {}
    sections: set[str] = set()
    for name, value in tree.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, Mapping):
            sections.add(dotted)
            sub_leaves, sub_sections = _flatten(value, dotted + ".")
            leaves.update(sub_leaves)
            sections |= sub_sections
        else:
            leaves[dotted] = value
    return leaves, sections


def _same(first: Any, second: Any) -> bool:
    """Equal as config values: true, false and null match only themselves (to Python
    ``True == 1``); numbers compare by value (1 and 1.0 are one number to the config)."""
    if isinstance(first, bool) or isinstance(second, bool) or first is None or second is None:
        return first is second or (type(first) is type(second) and first == second)
    return first == second


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)

