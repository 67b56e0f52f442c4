"""``jingle evaluate fusion`` (pipelines/evaluate_fusion.py, pipelines/fusion_evaluation.py):
files scored against the shortcuts, a checkpoint fused and scored over a folder of pairs,
the report's schema, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from jingle.evaluation.arrangement import SCORE_FIGURES
from jingle.evaluation.shortcuts import ALL_SHORTCUTS, SHORTCUTS
from jingle.pipelines import evaluate_fusion
from tests.conftest import tone, write
from tests.test_fusion_inference import checkpoints  # noqa: F401 (fixture)


def run(capsys, *args) -> tuple[int, str, str]:
    try:
        code = evaluate_fusion.main([str(arg) for arg in args])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two generated pairs of 5 s (mixed rates) with their rendered arrangements."""
    root = tmp_path_factory.mktemp("corpus")
    write_fusion_corpus(root, CorpusSpec(pairs=2, min_seconds=5.0, max_seconds=5.0, seed=3), arrangements=True)
    return root


def test_files_are_scored_against_the_shortcuts_and_reported(corpus, tmp_path, capsys):
    quiet = tmp_path / "quiet_copy.wav"  # the target at -30 dB: a copy, whatever its level
    audio, rate = soundfile.read(corpus / "target" / "pair_0000.wav", dtype="float32")
    write(quiet, 0.03 * audio, rate)
    out = tmp_path / "report"
    code, printed, errors = run(capsys, corpus / "input" / "pair_0000.wav", corpus / "target" / "pair_0000.wav",
                                corpus / "arrangement" / "pair_0000.wav", quiet, "--out", out,
                                "--arrangement", corpus / "arrangement" / "pair_0000.wav")
    assert code == 0, errors
    report = json.loads((out / "report.json").read_text())
    assert report["higher_is_better"] is True and len(report["pairs"]) == 1
    pair = report["pairs"][0]
    assert pair["input"].endswith("input/pair_0000.wav") and pair["target"].endswith("target/pair_0000.wav")
    outputs = {entry["name"]: entry for entry in pair["outputs"]}
    # the file stems, the reference arrangement, then the shortcuts (its smeared copy last)
    assert list(outputs) == ["pair_0000", "quiet_copy", "arrangement", *ALL_SHORTCUTS]
    assert outputs["pair_0000"]["path"].endswith("arrangement/pair_0000.wav")
    assert all(outputs[name]["shortcut"] for name in ALL_SHORTCUTS)
    assert not any(outputs[name].get("shortcut") for name in ("pair_0000", "quiet_copy", "arrangement"))
    # the reference scores as the same file given as an output does
    assert outputs["arrangement"]["score"] == pytest.approx(outputs["pair_0000"]["score"], abs=1e-6)
    # the rendered arrangement beats every shortcut; a quiet copy of the target scores as a copy
    assert outputs["pair_0000"]["score"] > max(outputs[name]["score"] for name in ALL_SHORTCUTS)
    assert outputs["smeared_arrangement"]["figures"]["rhythm"] < outputs["pair_0000"]["figures"]["rhythm"] - 0.3
    assert outputs["quiet_copy"]["score"] == pytest.approx(outputs["copy_target"]["score"], abs=0.02)
    assert outputs["quiet_copy"]["figures"]["newness"] < 0.05
    for entry in pair["outputs"]:
        assert {*SCORE_FIGURES, "note_onset_f1", "pitch_class_precision", "envelope_cost"} <= set(entry["figures"])
    markdown = (out / "report.md").read_text()
    assert "| pair_0000 |" in markdown and "| plain_mix* |" in markdown and "| stationary* |" in markdown
    assert (out / "pictures" / "pair_0000.png").read_bytes()[:4] == b"\x89PNG"
    assert "best: pair_0000" in printed


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["{input}", "{target}"], "at least one OUTPUT.wav"),
        (["{input}", "{target}", "{missing}"], "output missing "),
        (["{input}", "{target}", "{input}", "{input}"], "two outputs are named"),
        (["{input}", "{target}", "{plain_mix}"], "has a shortcut's name"),
        (["{input}", "{target}", "{input}", "--compare", "x={tmp}"], "--compare, --arrangements and --actors go with"),
        (["{input}", "{target}", "{input}", "--arrangements", "{tmp}"], "--compare, --arrangements and --actors go with"),
        (["{input}", "{target}", "{input}", "--arrangement", "{missing}"], "output arrangement "),
        (["--pairs", "{tmp}"], "--checkpoint and --pairs go together"),
        (["{empty}", "{target}", "{input}"], "input "),
    ],
)
def test_bad_usage_and_bad_files_exit_2_with_one_line(corpus, tmp_path, capsys, arguments, message):
    plain_mix = write(tmp_path / "plain_mix.wav", tone(1.0, 16_000), 16_000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    names = {"input": corpus / "input" / "pair_0001.wav", "target": corpus / "target" / "pair_0001.wav",
             "missing": tmp_path / "missing.wav", "plain_mix": plain_mix, "tmp": tmp_path, "empty": empty}
    code, _, errors = run(capsys, *[argument.format(**names) for argument in arguments], "--out", tmp_path / "out")
    assert code == 2, errors
    assert message in errors and len(errors.strip().splitlines()) == 1, errors


@pytest.mark.ray
def test_a_checkpoint_is_fused_and_scored_over_a_folder_of_pairs(ray_session, checkpoints, corpus, tmp_path, capsys):
    pairs = tmp_path / "pairs"
    for role in ("input", "target"):
        for name, source in (("pair_0000", "pair_0000"), ("pair_0001", "pair_0001"), ("pair_0002", "pair_0000")):
            (pairs / role).mkdir(parents=True, exist_ok=True)
            (pairs / role / f"{name}.wav").write_bytes((corpus / role / f"{source}.wav").read_bytes())
    arrangements = tmp_path / "arrangements"
    arrangements.mkdir()
    for name in ("pair_0000", "pair_0001"):  # none for pair_0002
        (arrangements / f"{name}.wav").write_bytes((corpus / "arrangement" / f"{name}.wav").read_bytes())
    out = tmp_path / "evaluation"
    code, printed, errors = run(capsys, "--checkpoint", checkpoints["compositional"], "--pairs", pairs, "--out", out,
                                "--arrangements", arrangements, "--device", "cpu")
    assert code == 0, errors
    report = json.loads((out / "report.json").read_text())
    # pair_0002 has no arrangement to compare: that pair fails alone, with its reason
    assert [pair["pair_id"] for pair in report["pairs"]] == ["pair_0000", "pair_0001"]
    assert "pair_0002 not scored: output arrangement" in errors
    outputs = {entry["name"]: entry for entry in report["pairs"][0]["outputs"]}
    assert list(outputs) == ["model", "arrangement", "arrangement_decoded", *ALL_SHORTCUTS]
    model = outputs["model"]
    assert model["path"] == str((out / "fused" / "pair_0000.wav").resolve()) and model["step"] == 7
    # the fused file a player gets is within full scale, and the gain applied is recorded
    fused, _ = soundfile.read(model["path"], dtype="float32")
    assert np.abs(fused).max() <= 0.99 + 1e-6
    assert np.abs(fused).max() == pytest.approx(model["output_peak"] * model["output_gain"], rel=1e-4)
    assert outputs["arrangement"]["score"] > max(outputs[name]["score"] for name in ALL_SHORTCUTS)
    # through the codec the arrangement loses a little, and is still an arrangement
    assert outputs["arrangement_decoded"]["score"] > max(outputs[name]["score"] for name in SHORTCUTS)
    assert (out / "pictures" / "pair_0000.png").exists() and (out / "fused" / "pair_0000.json").exists()
    markdown = (out / "report.md").read_text()
    assert "## All pairs" in markdown and "| model |" in markdown
    assert [line for line in markdown.splitlines() if line.startswith("| arrangement |")][0].endswith("| 2 | 2/2 |")
