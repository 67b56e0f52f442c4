"""Generated music for the example corpus, tests and benchmarks (no downloads).

Inputs are percussive (kick, snare and hi-hat patterns at a tempo), targets are tonal (a
chord progression with a melody, additive harmonics under an envelope). Every clip comes
from an explicit seed, so a corpus can be made again bit for bit.

Shape letters: S samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.audio import write_wav

# (sample rate, channels, soundfile subtype): the corpus mixes formats on purpose, so
# that every run exercises resampling, downmixing and integer/float decoding.
WAV_FORMATS = (
    (44_100, 2, "PCM_16"),
    (48_000, 1, "PCM_24"),
    (24_000, 1, "FLOAT"),
    (22_050, 2, "PCM_32"),
    (32_000, 1, "DOUBLE"),
    (16_000, 1, "PCM_U8"),
)


def _envelope(length: int, sample_rate: int, decay_seconds: float) -> np.ndarray:
    t = np.arange(length) / sample_rate
    return np.exp(-t / decay_seconds)


def drums(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A drum loop: kick on a pattern, snare on the back-beat, hats on eighths. [S]"""
    tempo = rng.uniform(84, 140)
    step = 60.0 / tempo / 4  # sixteenth note, seconds
    length = round(seconds * sample_rate)
    out = np.zeros(length, dtype=np.float64)
    kick_pattern = rng.random(16) < np.array([0.95, 0, 0.15, 0, 0.1, 0, 0.4, 0, 0.9, 0, 0.2, 0.3, 0.05, 0, 0.3, 0])
    hit = round(0.35 * sample_rate)
    t = np.arange(hit) / sample_rate
    kick = np.sin(2 * np.pi * (45 * t + 110 * 0.04 * (1 - np.exp(-t / 0.04)))) * _envelope(hit, sample_rate, 0.09)
    snare = (0.6 * rng.standard_normal(hit) + 0.5 * np.sin(2 * np.pi * 185 * t)) * _envelope(hit, sample_rate, 0.06)
    hat = np.diff(rng.standard_normal(hit + 1)) * _envelope(hit, sample_rate, 0.012)
    for index in range(int(seconds / step)):
        start = round(index * step * sample_rate)
        position = index % 16
        for sound, gain, on in (
            (kick, 0.9, kick_pattern[position]),
            (snare, 0.55, position in (4, 12)),
            (hat, 0.25 * rng.uniform(0.6, 1.0), position % 2 == 0),
        ):
            if on:
                end = min(length, start + hit)
                out[start:end] += gain * sound[: end - start]
    return (0.8 * out / max(1e-9, np.abs(out).max())).astype(np.float32)


def chords(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A four-chord progression with a melody, in a random key. [S]"""
    root = 48 + int(rng.integers(0, 12))  # MIDI note of the key's tonic
    progression = [(0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12)]  # I V vi IV
    bar = rng.uniform(1.6, 2.6)
    length = round(seconds * sample_rate)
    out = np.zeros(length, dtype=np.float64)
    harmonics = rng.uniform(0.2, 0.7, size=6) ** np.arange(1, 7)

    def note(midi: float, start: float, duration: float, gain: float) -> None:
        first, count = round(start * sample_rate), round(duration * sample_rate)
        count = min(count, length - first)
        if count <= 0:
            return
        t = np.arange(count) / sample_rate
        frequency = 440.0 * 2 ** ((midi - 69) / 12)
        tone = sum(h * np.sin(2 * np.pi * frequency * (k + 1) * t) for k, h in enumerate(harmonics))
        attack = np.minimum(1.0, t / 0.02)
        release = np.minimum(1.0, (duration - t) / 0.08).clip(0)
        out[first : first + count] += gain * tone * attack * release * np.exp(-t / (duration * 1.5))

    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    for index in range(int(np.ceil(seconds / bar))):
        chord = progression[index % 4]
        for interval in chord:
            note(root + interval, index * bar, bar, 0.25)
        for beat in range(4):
            if rng.random() < 0.8:
                note(root + 12 + scale[rng.integers(0, 8)], index * bar + beat * bar / 4, bar / 4, 0.2)
    return (0.7 * out / max(1e-9, np.abs(out).max())).astype(np.float32)


@dataclass(frozen=True)
class CorpusSpec:
    pairs: int = 8
    min_seconds: float = 20.0
    max_seconds: float = 40.0
    seed: int = 0
    mixed_formats: bool = True


def write_fusion_corpus(root: str | Path, spec: CorpusSpec = CorpusSpec(), *, first_index: int = 0) -> list[str]:
    """Write ``ROOT/input/pair_NNNN.wav`` (drums) and ``ROOT/target/pair_NNNN.wav`` (chords).

    Pair ``i`` is generated from ``seed + i``, so adding pairs with ``first_index`` extends a
    corpus without changing the pairs already there.

    Returns:
        the pair ids written.
    """
    root = Path(root)
    ids = []
    for index in range(first_index, first_index + spec.pairs):
        rng = np.random.default_rng([spec.seed, index])
        seconds = float(rng.uniform(spec.min_seconds, spec.max_seconds))
        pair_id = f"pair_{index:04d}"
        for role, make in (("input", drums), ("target", chords)):
            sample_rate, channels, subtype = (
                WAV_FORMATS[(index + (role == "target")) % len(WAV_FORMATS)] if spec.mixed_formats else (24_000, 1, "PCM_16")
            )
            mono = make(seconds, sample_rate, rng)
            audio = mono if channels == 1 else np.stack([mono, 0.9 * mono], axis=1)
            write_wav(root / role / f"{pair_id}.wav", audio, sample_rate, subtype)
        ids.append(pair_id)
    return ids
