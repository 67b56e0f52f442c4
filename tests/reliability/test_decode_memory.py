"""Decoding a pair holds a bounded amount of audio, however long its recordings are.

The decode functions that Ray Data runs as tasks (``decode_fusion_pairs``,
``featurize_pointer_pairs``) are called in this process with a small read block, and
their peak allocation is measured with tracemalloc, which sees numpy's buffers (every
buffer of the streamed path whose size could follow the recording's; torch's allocations,
the resampler's convolution outputs of a block each, are not traced). The whole-file
path that preprocessing took before is measured beside them, so that a test that could
not see growth fails instead of passing. No Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile

from jingle.datasets.audio import Segmenting
from jingle.datasets.features import MelFeatures
from jingle.datasets.fusion_preprocess import _window_hash, decode_fusion_pairs
from jingle.datasets.pointer_preprocess import featurize_pointer_pairs, streamed_log_mel
from tests.test_audio import whole_file_read

REPO = Path(__file__).resolve().parents[2]
FILE_RATE = 44_100
BLOCK_FRAMES = 4_096
SHORT_SECONDS, LONG_SECONDS = 15.0, 60.0  # 4x


def write_noise(path: Path, seconds: float, *, seed: int) -> Path:
    """44.1 kHz stereo PCM_16 noise, written a block at a time."""
    rng = np.random.default_rng(seed)
    total = round(seconds * FILE_RATE)
    with soundfile.SoundFile(str(path), "w", samplerate=FILE_RATE, channels=2, subtype="PCM_16") as handle:
        for start in range(0, total, 1 << 16):
            handle.write((0.2 * rng.standard_normal((min(1 << 16, total - start), 2))).astype(np.float32))  # [S, C]
    return path


def peak_bytes(run: Callable[[], object]) -> tuple[int, object]:
    """The largest traced allocation total while ``run`` ran, and what it returned."""
    tracemalloc.start()
    try:
        result = run()
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------------------- fusion

SEGMENTING = Segmenting(segment_seconds=1.0)


def streamed_fusion_hashes(input_path: Path, target_path: Path) -> list[str]:
    """Every window of the pair through ``decode_fusion_pairs``; each batch is dropped once
    seen, as the encoder stage drops it, so only the hashes stay."""
    item = {"pair_id": "pair", "input_path": str(input_path), "target_path": str(target_path), "fingerprint": "", "skip": "[]"}
    batch = {key: np.array([value], dtype=object) for key, value in item.items()}
    hashes = []
    for rows in decode_fusion_pairs(batch, sample_rate=24_000, segmenting=SEGMENTING.to_dict(), block_frames=BLOCK_FRAMES):
        assert not rows["reject_reason"].any(), rows["reject_reason"]
        hashes += list(rows["audio_sha256"])
    return hashes


def whole_file_fusion_hashes(input_path: Path, target_path: Path) -> list[str]:
    audio = [whole_file_read(path, 24_000) for path in (input_path, target_path)]
    bounds = SEGMENTING.bounds(min(len(side) for side in audio), 24_000)
    return [_window_hash(audio[0][start:end], audio[1][start:end]) for start, end in bounds]


def test_fusion_decode_memory_does_not_grow_with_the_recording(tmp_path):
    peaks = {}
    for seconds in (SHORT_SECONDS, LONG_SECONDS):
        # the target a little longer: the pair's length is the input's
        pair = (write_noise(tmp_path / f"input-{seconds}.wav", seconds, seed=0),
                write_noise(tmp_path / f"target-{seconds}.wav", seconds + 0.5, seed=1))
        streamed, hashes = peak_bytes(lambda: streamed_fusion_hashes(*pair))
        whole, expected = peak_bytes(lambda: whole_file_fusion_hashes(*pair))
        assert hashes == expected and len(hashes) == int(seconds)  # the same windows
        peaks[seconds] = streamed, whole
    (short_streamed, short_whole), (long_streamed, long_whole) = peaks[SHORT_SECONDS], peaks[LONG_SECONDS]
    assert long_whole > 3 * short_whole, peaks  # the measurement sees a path that grows
    assert long_streamed < 1.3 * short_streamed, peaks
    assert long_streamed < long_whole / 4, peaks


# ---------------------------------------------------------------------------- pointer


def test_pointer_featurize_holds_mels_not_audio(tmp_path):
    """A longer raw recording adds its log-mel frames (small) to the peak, not its audio."""
    mel = MelFeatures()
    edit = write_noise(tmp_path / "edit.wav", 3.0, seed=2)
    pointers = tmp_path / "pointers.npy"
    np.save(pointers, np.arange(mel.frames_for(3 * mel.sample_rate)))  # labels given: no alignment
    peaks, rows = {}, {}
    for seconds in (SHORT_SECONDS, LONG_SECONDS):
        raw = write_noise(tmp_path / f"raw-{seconds}.wav", seconds, seed=3)
        item = {"pair_id": "pair", "raw_path": str(raw), "edit_path": str(edit), "pointers_path": str(pointers),
                "edl_path": "", "fingerprint": ""}
        batch = {key: np.array([value], dtype=object) for key, value in item.items()}
        peaks[seconds], rows[seconds] = peak_bytes(
            lambda: featurize_pointer_pairs(batch, features=mel.to_dict(), alignment={}, block_frames=BLOCK_FRAMES)
        )
        assert not rows[seconds]["reject_reason"][0], rows[seconds]["reject_reason"][0]
    raw_mel = rows[LONG_SECONDS]["raw_mel"][0].reshape(mel.n_mels, -1)  # [M, T]
    assert np.array_equal(raw_mel, mel.log_mel(whole_file_read(tmp_path / f"raw-{LONG_SECONDS}.wav", mel.sample_rate)))
    growth = peaks[LONG_SECONDS] - peaks[SHORT_SECONDS]
    extra_mono_bytes = (LONG_SECONDS - SHORT_SECONDS) * FILE_RATE * 4  # what the whole-file read added first
    assert growth < extra_mono_bytes / 4, (peaks, extra_mono_bytes)


@pytest.mark.parametrize("features", [MelFeatures(), MelFeatures(n_fft=512, hop_length=512), MelFeatures(n_fft=1000, hop_length=160)])
def test_streamed_log_mel_equals_the_whole_recording_s(features):
    rng = np.random.default_rng(features.n_fft)
    for length in (1, features.n_fft // 2, 5_000, 30_001):
        audio = (0.2 * rng.standard_normal(length)).astype(np.float32)  # [S]
        expected = features.log_mel(audio)  # [M, T]
        for block, chunk in ((97, features.n_fft), (4_096, 3_000), (100_000, 1 << 16)):
            blocks = (audio[start : start + block] for start in range(0, length, block))
            streamed, samples = streamed_log_mel(blocks, features, chunk_samples=chunk)
            assert samples == length and np.array_equal(streamed, expected), (length, block, chunk)


# ---------------------------------------------------------------------------- benchmark


@pytest.mark.bench
def test_decode_memory_benchmark_smoke(tmp_path):
    result = subprocess.run(
        [sys.executable, "bench/decode_memory.py", "--smoke", "--work", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ}, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line.split() for line in result.stdout.splitlines() if line.strip().startswith(("3 s", "12 s"))]
    assert len(lines) == 2 and all("yes" in line for line in lines), result.stdout
    assert not list(tmp_path.iterdir())  # the generated WAVs are gone
