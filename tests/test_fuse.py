"""``jingle fuse`` (pipelines/fuse.py) and its figure: tiny mel-codec checkpoints, seconds of
generated audio (the checkpoints and the pair are test_fusion_inference.py's fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from jingle.training.checkpoints import state_path
from jingle.models.codecs import MelCodec, build_codec
from jingle.models.compositional import COMPONENT_NAMES
from jingle.pipelines import fuse
from jingle.pipelines.figures import fusion_figure
from tests.conftest import tone, write
from tests.test_fusion_inference import HOP, SAMPLE_RATE, checkpoints, fake_decode, pair  # noqa: F401 (fixtures)

KEYS = {"input", "target", "output", "checkpoint", "step", "codec_id", "sample_rate", "agent", "pair", "source_seconds",
        "duration_seconds", "output_peak", "output_gain", "segment_seconds", "chunks", "envelope_correlation", "novelty",
        "component_weights", "window_metadata"}


def run(capsys, *args) -> tuple[int, str, str]:
    try:
        code = fuse.main([str(arg) for arg in args])
    except SystemExit as exit:  # argparse's own errors (OneLineParser: one line, exit 2)
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 20_000  # three rows of spectrograms, not an empty canvas


def test_compositional_fuse_writes_wav_png_and_json(checkpoints, pair, tmp_path, capsys):
    out = tmp_path / "fused" / "out.wav"
    code, printed, errors = run(capsys, "--checkpoint", checkpoints["compositional"], *pair, "-o", out, "--device", "cpu")
    assert code == 0, errors
    assert [line.split()[1] for line in printed.splitlines()] == [str(out), str(out.with_suffix(".png")), str(out.with_suffix(".json"))]

    audio, rate = soundfile.read(out)
    assert rate == SAMPLE_RATE and audio.ndim == 1 and soundfile.info(str(out)).subtype == "FLOAT"
    assert abs(len(audio) - round(2.5 * SAMPLE_RATE)) < HOP and np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert_png(out.with_suffix(".png"))

    report = json.loads(out.with_suffix(".json").read_text())
    assert KEYS <= set(report)
    assert report["step"] == 7 and report["codec_id"] == build_codec("mel").id and report["chunks"] == 3
    assert report["checkpoint"] == str(checkpoints["compositional"]) and report["input"] == str(pair[0])
    assert report["pair"] is None and report["window_metadata"] is None
    assert report["duration_seconds"] == pytest.approx(2.5, abs=HOP / SAMPLE_RATE)
    for value in report["envelope_correlation"].values():
        assert -1.0 <= value <= 1.0
    assert set(report["novelty"]) == {"similarity_to_input", "similarity_to_target", "loss"}
    assert all(np.isfinite(v) for v in report["novelty"].values())
    assert set(report["component_weights"]) == set(COMPONENT_NAMES)
    # the file holds the decoded output times the recorded gain, never above 0.99
    peak, gain = report["output_peak"], report["output_gain"]
    assert gain == pytest.approx(min(1.0, 0.99 / peak)) and np.abs(audio).max() == pytest.approx(peak * gain, rel=1e-6)


def test_a_loud_output_is_written_under_full_scale_and_the_gain_printed(checkpoints, pair, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(MelCodec, "decode", lambda codec, latents: fake_decode(codec, 3.8, kept_samples=round(2.5 * SAMPLE_RATE))(latents))
    out = tmp_path / "loud.wav"
    code, printed, errors = run(capsys, "--checkpoint", checkpoints["compositional"], *pair, "-o", out)
    assert code == 0, errors
    assert "scaled by 0.261: the model's peak was 3.8)" in printed.splitlines()[0]
    assert np.abs(soundfile.read(out)[0]).max() == pytest.approx(0.99, abs=1e-6)
    assert json.loads(out.with_suffix(".json").read_text())["output_gain"] == pytest.approx(0.99 / 3.8)


def test_single_stage_model_has_no_component_weights(checkpoints, pair, tmp_path, capsys):
    out = tmp_path / "single.wav"
    code, _, errors = run(capsys, "--checkpoint", checkpoints["none"], *pair, "-o", out, "--pair", "0")
    assert code == 0, errors
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["agent"] == "none" and report["component_weights"] is None and report["pair"] is None



def test_adaptive_fuse_picks_one_window_per_chunk_by_the_pair_mode(checkpoints, pair, tmp_path, capsys):
    reports = {}
    for mode in ("best", "mean", "1"):
        out = tmp_path / f"adaptive-{mode}.wav"
        code, _, errors = run(capsys, "--checkpoint", checkpoints["adaptive_window"], *pair, "-o", out, "--pair", mode)
        assert code == 0, errors
        report = reports[mode] = json.loads(out.with_suffix(".json").read_text())
        # 2.5 s holds two whole 1 s chunks; the 0.5 s tail is shorter than a window's 0.8 s source
        assert report["chunks"] == 2
        assert report["pair"] == (int(mode) if mode.isdigit() else mode)
        assert len(soundfile.read(out)[0]) == 2 * 40 * HOP
        chunks = report["window_metadata"]["chunks"]
        assert [c["start_seconds"] for c in chunks] == [0.0, 1.0] and all(len(c["pairs"]) == len(c["pair_novelty"]) == 3 for c in chunks)
        assert set(report["component_weights"]) == set(COMPONENT_NAMES)

    # the pairs a chunk offers do not depend on the mode; only the choice does
    novelty = [c["pair_novelty"] for c in reports["best"]["window_metadata"]["chunks"]]
    for mode in ("mean", "1"):
        np.testing.assert_allclose([c["pair_novelty"] for c in reports[mode]["window_metadata"]["chunks"]], novelty, atol=1e-6)
    expected = {
        "best": ([int(np.argmin(losses)) for losses in novelty], np.mean([min(losses) for losses in novelty])),
        "1": ([1, 1], np.mean([losses[1] for losses in novelty])),
        "mean": (["mean", "mean"], np.mean(novelty)),
    }
    # the fixture must tell "best" from "first pair" and from "pair 1"
    assert expected["best"][0] == [2, 1], novelty
    for mode, (used, loss) in expected.items():
        assert [c["pair_used"] for c in reports[mode]["window_metadata"]["chunks"]] == used, mode
        # the reported novelty is the kept pair's (the mean of the pairs' for "mean")
        assert reports[mode]["novelty"]["loss"] == pytest.approx(loss, abs=1e-6), mode


@pytest.mark.parametrize(
    "agent, args, message",
    [
        ("adaptive_window", ["--pair", "3"], "--pair 3 is out of range: this adaptive_window model writes 3 pair(s)"),
        ("compositional", ["--pair", "1"], "--pair 1 is out of range"),
        ("compositional", ["--pair", "worst"], "must be best, mean or a pair index"),
        ("compositional", ["--batch", "x"], "--batch takes no INPUT.wav or -o"),
        ("compositional", ["--out", "x"], "--out and --actors go with --batch"),
    ],
)
def test_bad_usage_exits_2_with_one_line(checkpoints, pair, tmp_path, capsys, agent, args, message):
    code, _, errors = run(capsys, "--checkpoint", checkpoints[agent], *pair, "-o", tmp_path / "out.wav", *args)
    assert code == 2 and message in errors and len(errors.strip().splitlines()) == 1, errors
    assert not (tmp_path / "out.wav").exists()


def test_bad_files_exit_2_with_one_line(checkpoints, pair, tmp_path, capsys):
    corrupt = tmp_path / "corrupt" / "state.pt"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a checkpoint")
    state = torch.load(state_path(checkpoints["compositional"]), weights_only=True)
    state["codec"]["id"] = "mel-v0-0123456789"
    torch.save(state, tmp_path / "other-codec.pt")
    state["config"]["model"]["heads"] = 5  # 32 channels cannot be split over 5 heads
    torch.save(state, tmp_path / "bad-config.pt")
    short = write(tmp_path / "short.wav", tone(0.5, SAMPLE_RATE), SAMPLE_RATE)
    cases = [
        (corrupt.parent, pair, "is corrupt or not a jingle checkpoint"),
        (tmp_path / "other-codec.pt", pair, "was trained on codec mel-v0-0123456789, not mel-v1-"),
        (tmp_path / "missing", pair, "not found"),
        (tmp_path / "bad-config.pt", pair, "its stored config is not valid in this version"),
        (checkpoints["compositional"], (tmp_path / "missing.wav", pair[1]), "input " + str(tmp_path / "missing.wav") + ": file does not exist"),
        (checkpoints["adaptive_window"], (pair[0], short), "overlap for 0.50 s, the model needs at least 0.80 s"),
    ]
    for checkpoint, (input_path, target_path), message in cases:
        code, _, errors = run(capsys, "--checkpoint", checkpoint, input_path, target_path, "-o", tmp_path / "out.wav")
        assert code == 2 and message in errors and len(errors.strip().splitlines()) == 1, errors


def test_fusion_figure_draws_clips_of_different_lengths(tmp_path):
    rng = np.random.default_rng(1)
    path = fusion_figure(
        tmp_path / "deep" / "figure.png",
        input_audio=tone(1.0, 16_000),
        target_audio=rng.standard_normal(20_000).astype(np.float32) * 0.1,
        output_audio=np.zeros(100, dtype=np.float32),
        sample_rate=16_000,
        title="three clips",
    )
    assert path == tmp_path / "deep" / "figure.png"
    assert_png(path)


@pytest.mark.ray
def test_batch_fuses_every_pair_of_a_folder(ray_session, checkpoints, tmp_path, capsys):
    pairs = tmp_path / "pairs"
    for name, frequency in (("a", 220.0), ("sub/b", 330.0)):
        write(pairs / "input" / f"{name}.wav", tone(1.5, SAMPLE_RATE, frequency), SAMPLE_RATE)
        write(pairs / "target" / f"{name}.wav", tone(1.5, 44_100, frequency * 1.5, channels=2), 44_100)
    write(pairs / "input" / "lonely.wav", tone(1.5, SAMPLE_RATE), SAMPLE_RATE)
    write(pairs / "input" / "short.wav", tone(0.01, SAMPLE_RATE), SAMPLE_RATE)
    write(pairs / "target" / "short.wav", tone(1.5, SAMPLE_RATE), SAMPLE_RATE)
    out = tmp_path / "fused"
    code, printed, errors = run(capsys, "--checkpoint", checkpoints["compositional"], "--batch", pairs, "--out", out)
    assert code == 0, errors
    assert "fused 2 pair(s)" in printed and "failed 1" in printed and "short: input and target overlap for 0.01 s" in printed
    assert "lonely.wav: no target" in errors
    for name in ("a", "sub/b"):
        report = json.loads((out / f"{name}.json").read_text())
        assert report["pair_id"] == name and report["step"] == 7
        assert len(soundfile.read(out / f"{name}.wav")[0]) == round(1.5 * SAMPLE_RATE)
        assert_png(out / f"{name}.png")
    assert not (out / "short.wav").exists()
