"""``jingle models summary``: parameter counts of the fusion model or the pointer network, module by module.

    python -m pipelines.model_summary summary [--agent compositional|adaptive_window|none] [--config FILE]
    python -m pipelines.model_summary summary --pointer [--config configs/pointer/full.json]

The counts are of the real modules built from the config (defaults: the design notes'
architecture), next to the figures the notes give, so that a change of architecture shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from torch import nn

from jingle.models.cascade import AGENTS, CascadeConfig, build_fusion_model
from jingle.models.blocks import parameter_count
from jingle.pipelines.common import EntryPoint, UsageError, add_common_arguments

PROG = "jingle models"

# What the design notes say, for comparison (None: the notes give no figure).
NOTES_FIGURES = {
    "model": {"compositional": 40.0e6, "adaptive_window": 43.6e6, "none": None},
    "agent": {"compositional": 14.6e6, "adaptive_window": None, "none": None},
    "agent.window_selector": 3.2e6,
    "agent.compositional_agent": 14.6e6,
    "agent.input_reducer": 0.1e6,
    "agent.target_reducer": 0.1e6,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    summary = actions.add_parser("summary", help="parameter counts per module", description=__doc__.splitlines()[0])
    summary.add_argument("--agent", choices=AGENTS, default=None, help="agent (default: the config's, compositional)")
    summary.add_argument("--config", default=None, help="JSON file with the model config (its 'model' section, or the whole file)")
    summary.add_argument("--depth", type=int, default=2, help="module depth to list (default: 2)")
    summary.add_argument("--pointer", action="store_true", help="the pointer network (its config's 'model' section)")
    add_common_arguments(summary)


def load_model_config(path: str | None, agent: str | None) -> CascadeConfig:
    values = {}
    if path:
        try:
            document = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"--config {path}: cannot read JSON ({error})") from None
        values = document.get("model", document)
    if agent:
        values = {**values, "agent": agent, "num_stages": 1 if agent == "none" else 2}
    try:
        return CascadeConfig.from_dict(values)
    except (ValueError, TypeError) as error:
        raise UsageError(f"model config: {error}") from None


def module_rows(model: nn.Module, depth: int) -> list[tuple[str, int]]:
    """(dotted name, parameters) of every module down to ``depth``, in definition order."""
    rows = [("model", parameter_count(model))]
    for name, module in model.named_modules():
        if name and name.count(".") < depth and parameter_count(module) > 0:
            rows.append((name, parameter_count(module)))
    return rows


def summary_table(config: CascadeConfig, depth: int) -> str:
    model = build_fusion_model(config)
    lines = [f"fusion model: agent={config.agent}, num_stages={config.num_stages}, E={config.model_dim}, D={config.latent_dim}",
             f"{'module':40s} {'parameters':>14s}  notes"]
    for name, count in module_rows(model, depth):
        figure = NOTES_FIGURES.get(name)
        if isinstance(figure, dict):
            figure = figure.get(config.agent)
        note = f"~{figure / 1e6:.1f}M in the notes" if figure else ""
        lines.append(f"{'  ' * name.count('.') + name:40s} {count:>14,}  {note}")
    return "\n".join(lines)


def pointer_summary_table(path: str | None, depth: int) -> str:
    from jingle.models.pointer import PointerConfig, PointerNetwork
    from jingle.training.pointer_config import PointerTrainConfig

    config = PointerTrainConfig.from_file(path).model if path else PointerConfig()
    model = PointerNetwork(config)
    lines = [f"pointer network: mode={config.mode}, D={config.model_dim}, layers={config.encoder_layers}+{config.decoder_layers}, M={config.n_mels}",
             f"{'module':40s} {'parameters':>14s}  notes"]
    for name, count in module_rows(model, depth):
        note = "~15M in the notes (plan 002)" if name == "model" else ""
        lines.append(f"{'  ' * name.count('.') + name:40s} {count:>14,}  {note}")
    return "\n".join(lines)


def command(args: argparse.Namespace) -> int:
    if args.depth < 0:
        raise UsageError(f"--depth must be non-negative, got {args.depth}")
    if args.pointer:
        if args.agent:
            raise UsageError("--agent is a fusion model option; leave it out with --pointer")
        print(pointer_summary_table(args.config, args.depth))
        return 0
    print(summary_table(load_model_config(args.config, args.agent), args.depth))
    return 0


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, command)
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main


if __name__ == "__main__":
    sys.exit(main())
