"""Files made to attack or to confuse: a checkpoint whose pickle runs code, WAV headers that
lie, names no shell would like. Each is refused in one line or read correctly; none runs code.

Costs: about 2 s in all (no Ray; the fusion cases run ``jingle fuse`` in this process on the
tiny checkpoints of tests/test_fusion_inference.py).
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from jingle.datasets.audio import AudioError, probe, read_mono
from jingle.training.checkpoints import CheckpointError, load_state
from jingle.models.codecs import CodecUnavailable, load_encodec_state
from jingle.pipelines import conform, fuse
from tests.conftest import tone, write
from tests.test_fusion_inference import pair  # noqa: F401 (fixture)


class _Payload:
    """Unpickling this calls ``os.system``: the classic code-running pickle."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def evil_state(path: Path, marker: Path) -> Path:
    """A ``state.pt`` in torch's zip format whose pickle would create ``marker`` when loaded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "jingle-checkpoint", "model": _Payload(f"touch {marker}")}, path)
    with zipfile.ZipFile(path) as archive:  # the payload really is in the pickle
        assert any(name.endswith("data.pkl") and b"system" in archive.read(name) for name in archive.namelist())
    return path


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "evil-checkpoint"
    evil_state(checkpoint / "state.pt", marker)
    return checkpoint, marker


@pytest.mark.parametrize("kind", ["fusion", "pointer"])
def test_a_code_running_pickle_is_refused_when_a_checkpoint_is_loaded(evil, kind):
    checkpoint, marker = evil
    with pytest.raises(CheckpointError) as raised:
        load_state(checkpoint, kind=kind)
    assert "is corrupt or not a jingle checkpoint (UnpicklingError)" in str(raised.value)
    assert not marker.exists()


def test_a_code_running_pickle_is_refused_as_a_codec_checkpoint(evil):
    checkpoint, marker = evil
    with pytest.raises(CodecUnavailable, match="is not a readable"):
        load_encodec_state("encodec_24khz", checkpoint / "state.pt")
    assert not marker.exists()


def test_jingle_fuse_and_conform_refuse_it_in_one_line_exit_2(evil, pair, tmp_path, capsys):  # noqa: F811 (fixture)
    checkpoint, marker = evil
    commands = [
        (fuse.main, ["--checkpoint", checkpoint, *pair, "-o", tmp_path / "out.wav"]),
        (conform.main, ["--checkpoint", checkpoint, *pair, "-o", tmp_path / "edl.json", "--method", "network"]),
    ]
    for main, args in commands:
        code = main([str(arg) for arg in args])
        errors = capsys.readouterr().err.strip()
        assert code == 2 and len(errors.splitlines()) == 1 and "not a jingle checkpoint" in errors, errors
    assert not marker.exists() and not (tmp_path / "out.wav").exists() and not (tmp_path / "edl.json").exists()


def _wav_with_data_size(path: Path, audio: np.ndarray, sample_rate: int, declared: int, channels: int = 1) -> Path:
    """A PCM_16 WAV whose RIFF and data sizes are ``declared`` (0xFFFFFFFF: a streamed recording)."""
    frames = (np.clip(audio, -1, 1) * 32767).astype("<i2").reshape(-1, channels)
    data = frames.tobytes()
    header = b"RIFF" + struct.pack("<I", 0xFFFFFFFF if declared == 0xFFFFFFFF else 36 + declared) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * channels * 2, channels * 2, 16)
    path.write_bytes(header + b"data" + struct.pack("<I", declared) + data)
    return path


def test_a_streamed_wav_with_unknown_lengths_reads_in_full(tmp_path):
    audio = tone(1.0, 16_000)
    path = _wav_with_data_size(tmp_path / "streamed.wav", audio, 16_000, 0xFFFFFFFF)
    read = read_mono(path, 16_000)
    assert len(read) == 16_000
    np.testing.assert_allclose(read, audio, atol=1e-3)


def test_a_header_that_promises_more_audio_than_the_file_holds_is_refused(tmp_path):
    audio = tone(1.0, 16_000)
    path = _wav_with_data_size(tmp_path / "short.wav", audio, 16_000, 4 * 16_000 * 2)
    with pytest.raises(AudioError, match="truncated: header declares 128000 bytes of audio, file holds 32000"):
        probe(path)


@pytest.mark.parametrize("name", ["ünïcödé – take 1.wav", "two  spaces; $(touch x) `y`.wav", "-starts-with-dash.wav"])
def test_names_with_unicode_spaces_and_shell_characters_are_read_as_names(tmp_path, name):
    path = write(tmp_path / name, tone(0.5, 24_000, channels=6), 24_000, "PCM_24")
    assert probe(path).channels == 6
    assert len(read_mono(path, 24_000)) == 12_000
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing ran
