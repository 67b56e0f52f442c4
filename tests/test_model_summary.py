"""``jingle models summary`` (pipelines/model_summary.py): real parameter counts of both models."""

from __future__ import annotations

from jingle.models.blocks import parameter_count
from jingle.models.cascade import CascadeConfig, build_fusion_model
from jingle.models.pointer import PointerConfig, PointerNetwork
from jingle.pipelines import cli, model_summary


def test_models_summary_prints_real_counts(capsys):
    assert model_summary.main(["summary", "--agent", "compositional"]) == 0
    printed = capsys.readouterr().out
    total = parameter_count(build_fusion_model(CascadeConfig()))
    assert f"{total:,}" in printed and "agent.composer" in printed and "~14.6M in the notes" in printed


def test_models_summary_lists_the_pointer_network(capsys):
    assert model_summary.main(["summary", "--pointer", "--config", "configs/pointer/mini.json", "--depth", "1"]) == 0
    printed = capsys.readouterr().out
    count = parameter_count(PointerNetwork(PointerConfig(model_dim=128, heads=4, encoder_layers=2, decoder_layers=2, feedforward_dim=512)))
    assert f"{count:,}" in printed and "mode=conform" in printed and "pointer_attention" in printed


def test_the_jingle_command_keeps_its_name(capsys):
    assert cli.main(["models", "summary", "--pointer", "--config", "configs/pointer/mini.json", "--depth", "0"]) == 0
    assert "pointer network: mode=conform" in capsys.readouterr().out
