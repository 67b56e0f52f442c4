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

import itertools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from jingle.core.config import ConfigError, SectionedConfig
from jingle.pipelines.tune_space_file import (
    FLOAT_DISTRIBUTIONS,
    Parameter,
    flatten,
    parse_parameters,
    refuse,
    same_value,
    read_space_file,
)

if TYPE_CHECKING:  # Ray and Optuna load only when a search is built
    import optuna
    from ray.tune.search.optuna import OptunaSearch

SEARCHES = ("random", "optuna")  # --search: Optuna's RandomSampler or its TPESampler


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
        parameters = parse_parameters(source, document, base_config)
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


def _check_against_config(space: SearchSpace) -> None:
    """Let the config's own validators judge each parameter's extremes and every pair's,
    each under conditions that make it active (the rest of the config as the base's)."""
    source, base = space.source, space.base_config
    requirements = _requirements(space.parameters)
    leaves, _ = flatten(base.to_dict())

    for parameter in space.parameters:
        for value in parameter.extremes():
            refusal = _refusal(base, {parameter.key: value}, [requirements[parameter.key]])
            if refusal is not None:
                context, error = refusal
                hint = ""
                base_value = leaves[parameter.key]
                if parameter.distribution in FLOAT_DISTRIBUTIONS and isinstance(base_value, int) and not isinstance(base_value, bool):
                    hint = f"; {parameter.distribution} gives floats: use randint or choice for a whole-number key"
                refuse(source, parameter.key, f"the config refuses {value!r}{_context(context)}: {error}{hint}")

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
    if any(key in needs and not any(same_value(value, allowed) for allowed in needs[key]) for key, value in assignment.items()):
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
        merged[key] = tuple(value for value in merged[key] if any(same_value(value, other) for other in allowed)) if key in merged else allowed
    return merged


def _context(context: Mapping[str, Any]) -> str:
    return f" (with {', '.join(f'{key}={value!r}' for key, value in context.items())})" if context else ""
