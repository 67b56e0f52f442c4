"""Edit pairs with known pointers, made from generated music (tests and benchmarks).

Shape letters: S samples, T frames.

A pair is a raw recording and an edit of it: raw frame ranges played in some order
(segments), joined with short crossfades. Because the segments are chosen here, the edit's
pointers (one raw frame per edit frame) are known exactly. Two kinds of edits:

- *conform* edits: random cuts, repeats and reorders of a recording, optionally
  post-processed (gain, EQ tilt, noise, compression) as a finished edit would be;
- *rule* edits: a recording made for a rule (``RULES``) and the edit that the rule makes
  of it, which a pointer network in "edit" mode learns from examples.

Everything is drawn from an explicit seed or ``np.random.Generator``; audio is mono
float32 at ``MelFeatures.sample_rate``. Segment boundaries are whole frames
(``hop_length`` samples), so an edit's frames line up with raw frames exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jingle.datasets.audio import splice, write_wav
from jingle.datasets.features import MelFeatures
from jingle.datasets.synth import chords, drums

RULES = ("remove_silence", "drop_false_start", "loop_marked_section")
LABELS = ("pointers", "edl", "none")

# Level of "silence" in rule recordings: a faint noise floor, as a real room has.
NOISE_FLOOR_RMS = 3e-4  # about -70 dBFS
MARKER_FREQUENCY_HZ = 3_000.0
MARKER_SECONDS = 0.08

Segments = list[tuple[int, int]]  # raw frame ranges [start, end) in play order


@dataclass
class EditPair:
    """A raw recording [S], its edit [S'], and the edit's known pointers [T_edit].

    Attributes:
        segments: raw frame ranges ``(start, end)`` in play order that make the edit.
        kind: ``"conform"`` or a rule name from ``RULES``.
        processing: ``process``'s description when the edit was post-processed.
    """

    name: str
    raw: np.ndarray
    edit: np.ndarray
    pointers: np.ndarray
    segments: Segments
    kind: str
    processing: dict | None = None


# ----------------------------------------------------------------------------- music


def _smooth_curve(length: int, sample_rate: int, rng: np.random.Generator, *, knot_seconds: float, low: float, high: float) -> np.ndarray:
    """A slowly varying random curve [S] through values in [low, high] every ``knot_seconds``."""
    knots = max(2, int(np.ceil(length / sample_rate / knot_seconds)) + 2)
    values = rng.uniform(low, high, size=knots)
    position = np.arange(length) / sample_rate / knot_seconds  # in knots
    index = np.minimum(position.astype(np.int64), knots - 2)
    fraction = position - index
    blend = 0.5 - 0.5 * np.cos(np.pi * fraction)  # smooth between knots
    return (values[index] * (1 - blend) + values[index + 1] * blend).astype(np.float32)


def music(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A raw recording: synth drums and chords whose sound drifts, so no two places match. [S]

    The synth's loops repeat exactly (same drum pattern every bar, same chord every four
    bars), which makes alignment ambiguous; here each layer's level and the chords'
    brightness drift slowly and independently, a quiet pitched texture wanders, and a
    faint noise floor of slowly changing colour sits under everything.
    """
    length = round(seconds * sample_rate)
    beat = drums(seconds, sample_rate, rng)[:length]
    tonal = chords(seconds, sample_rate, rng)[:length]
    brighter = np.concatenate([[0.0], np.diff(tonal)]).astype(np.float32) * 4.0
    brightness = _smooth_curve(length, sample_rate, rng, knot_seconds=1.3, low=0.0, high=1.0)
    tonal = tonal + brightness * brighter
    # A wandering tone (vibrato-free glide) that never repeats, with its own level drift.
    glide = 2 ** _smooth_curve(length, sample_rate, rng, knot_seconds=0.7, low=-1.0, high=1.0)
    phase = 2 * np.pi * np.cumsum(660.0 * glide) / sample_rate
    texture = 0.06 * np.sin(phase) * _smooth_curve(length, sample_rate, rng, knot_seconds=0.9, low=0.0, high=1.0)
    noise = rng.standard_normal(length).astype(np.float32)
    tint = _smooth_curve(length, sample_rate, rng, knot_seconds=2.0, low=0.0, high=1.0)
    noise_floor = 0.004 * (noise + tint * np.concatenate([[0.0], np.diff(noise)]))
    mix = (
        beat * _smooth_curve(length, sample_rate, rng, knot_seconds=1.1, low=0.5, high=1.0)
        + tonal * _smooth_curve(length, sample_rate, rng, knot_seconds=1.7, low=0.5, high=1.0)
        + texture
        + noise_floor
    )
    return (0.8 * mix / max(1e-9, float(np.abs(mix).max()))).astype(np.float32)


# ----------------------------------------------------------------------- rendering


def render_edit(
    raw: np.ndarray, segments: Segments, features: MelFeatures, *, crossfade_seconds: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """Play raw frame ranges in order: edit audio [S'] and its pointers [T_edit].

    Segment ``(start, end)`` contributes raw samples ``[start * hop, end * hop)`` (zeros
    past the raw's end), so every segment starts on an edit frame boundary and the edit
    has exactly ``sum(end - start)`` frames. At a join between non-contiguous segments,
    the incoming segment's first ``crossfade`` samples are an equal-power crossfade from
    the outgoing segment's continuation in the raw: the incoming material is not moved,
    and samples after the crossfade are raw samples exactly.
    """
    if raw.ndim != 1:
        raise ValueError(f"render_edit expects mono raw audio [S], got shape {raw.shape}")
    hop = features.hop_length
    raw_frames = features.frames_for(len(raw))
    for index, (start, end) in enumerate(segments):
        if not 0 <= start < end <= raw_frames:
            raise ValueError(f"segment {index} ({start}, {end}) is not a frame range inside the raw's {raw_frames} frames")
    crossfade = max(0, round(crossfade_seconds * features.sample_rate))
    padded = np.zeros(raw_frames * hop, dtype=np.float32)  # whole frames
    padded[: len(raw)] = raw
    edit = splice(padded, [(start * hop, end * hop) for start, end in segments], crossfade=crossfade)
    pointers = [np.arange(start, end, dtype=np.int64) for start, end in segments]
    pointers = np.concatenate(pointers) if pointers else np.zeros(0, dtype=np.int64)
    return edit.astype(np.float32), pointers


def merge_contiguous(segments: Segments) -> Segments:
    """Join neighbours where one ends where the next starts (one segment per jump)."""
    merged: Segments = []
    for start, end in segments:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


# ------------------------------------------------------------------- conform edits


def random_conform_segments(
    raw_frames: int,
    rng: np.random.Generator,
    *,
    frame_rate: float,
    min_segment_seconds: float = 1.0,
    max_segment_seconds: float = 8.0,
    operations_per_minute: float = 4.0,
) -> Segments:
    """Random cuts (removed spans), repeats and reorders of a recording, as frame ranges.

    The raw is cut into consecutive chunks of ``min_segment_seconds`` to
    ``max_segment_seconds``; a few operations (about ``operations_per_minute``, at least
    one, and at least one jump in the result) remove, repeat or swap chunks.
    """
    if not 0 < min_segment_seconds <= max_segment_seconds:
        raise ValueError(f"need 0 < min_segment_seconds <= max_segment_seconds, got {min_segment_seconds}, {max_segment_seconds}")
    shortest, longest = max(1, round(min_segment_seconds * frame_rate)), max(1, round(max_segment_seconds * frame_rate))
    chunks: Segments = []
    start = 0
    while start < raw_frames:
        end = min(raw_frames, start + int(rng.integers(shortest, longest + 1)))
        if raw_frames - end < shortest:
            end = raw_frames
        chunks.append((start, end))
        start = end
    if len(chunks) < 2:
        return chunks
    minutes = raw_frames / frame_rate / 60
    operations = max(1, int(rng.poisson(operations_per_minute * minutes)))
    while True:
        edited = list(chunks)
        for _ in range(operations):
            kind = rng.choice(("cut", "repeat", "reorder"))
            index = int(rng.integers(0, len(edited)))
            if kind == "cut" and len(edited) > 2:
                del edited[index]
            elif kind == "repeat":
                edited.insert(int(rng.integers(index + 1, len(edited) + 1)), edited[index])
            elif index + 1 < len(edited):
                edited[index], edited[index + 1] = edited[index + 1], edited[index]
        merged = merge_contiguous(edited)
        if len(merged) > 1:
            return merged


# ---------------------------------------------------------------- post-processing


def _tilt(audio: np.ndarray, sample_rate: int, tilt_db: float, corner_hz: float) -> np.ndarray:
    """First-order tilt shelf: ``-tilt/2`` dB far below ``corner_hz``, ``+tilt/2`` dB far above.

    The analog response ``H(s) = g (s + w/g) / (s + w g)`` with ``g = 10^(tilt/40)``,
    applied in the frequency domain (its impulse response is far shorter than a clip).
    """
    gain = 10 ** (tilt_db / 40)
    s = 2j * np.pi * np.fft.rfftfreq(len(audio), 1 / sample_rate)
    w = 2 * np.pi * corner_hz
    response = gain * (s + w / gain) / (s + w * gain)
    return np.fft.irfft(np.fft.rfft(audio) * response, n=len(audio)).astype(np.float32)


def process(
    audio: np.ndarray, sample_rate: int, rng: np.random.Generator, *, strength: float = 1.0
) -> tuple[np.ndarray, dict]:
    """Post-process a finished edit [S]: EQ tilt, soft compression, gain, additive noise.

    At ``strength`` 1: tilt and gain each within ±6 dB, tanh compression of drive up to 3,
    noise at 20–35 dB SNR; parameters scale with strength (noise amplitude too, so 0 is
    no processing at all).

    Returns:
        the processed audio [S] float32 and the parameters used.
    """
    if not strength >= 0:
        raise ValueError(f"strength must be >= 0, got {strength}")
    description = {
        "strength": float(strength),
        "tilt_db": float(strength * rng.uniform(-6, 6)),
        "tilt_corner_hz": float(rng.uniform(500, 3000)),
        "compression_drive": float(strength * rng.uniform(0.5, 3.0)),
        "gain_db": float(strength * rng.uniform(-6, 6)),
        "snr_db": float(rng.uniform(20, 35) - 20 * np.log10(strength)) if strength > 0 else float("inf"),
    }
    out = _tilt(audio, sample_rate, description["tilt_db"], description["tilt_corner_hz"])
    drive, peak = description["compression_drive"], max(1e-9, float(np.abs(out).max()))
    if drive > 0:
        out = peak * np.tanh(drive * out / peak) / np.tanh(drive)  # peak level kept, body raised
    out = out * 10 ** (description["gain_db"] / 20)
    if strength > 0:
        signal_rms = float(np.sqrt(np.mean(out**2))) if len(out) else 0.0
        noise_rms = signal_rms * 10 ** (-description["snr_db"] / 20)
        out = out + noise_rms * rng.standard_normal(len(out))
    return out.astype(np.float32), description


# ------------------------------------------------------------------- rule edits


def _near_silence(length: int, rng: np.random.Generator) -> np.ndarray:
    return (NOISE_FLOOR_RMS * rng.standard_normal(length)).astype(np.float32)


def _fade(audio: np.ndarray, sample_rate: int, *, fade_in: bool, fade_out: bool, seconds: float = 0.01) -> np.ndarray:
    out = audio.copy()
    length = min(len(out), round(seconds * sample_rate))
    ramp = np.linspace(0.0, 1.0, length, dtype=np.float32)
    if fade_in:
        out[:length] *= ramp
    if fade_out:
        out[len(out) - length :] *= ramp[::-1]
    return out


def _marker(sample_rate: int) -> np.ndarray:
    """A short high beep [S] that marks a section boundary."""
    t = np.arange(round(MARKER_SECONDS * sample_rate)) / sample_rate
    envelope = np.sin(np.pi * t / MARKER_SECONDS) ** 2
    return (0.3 * envelope * np.sin(2 * np.pi * MARKER_FREQUENCY_HZ * t)).astype(np.float32)


def _frames(seconds: float, features: MelFeatures) -> int:
    return max(1, round(seconds * features.frame_rate))


def rule_recording(rule: str, seconds: float, features: MelFeatures, rng: np.random.Generator) -> tuple[np.ndarray, Segments]:
    """A raw recording made for ``rule`` and the rule's edit of it, as frame ranges.

    - ``remove_silence``: music with 2–4 near-silent gaps of 0.5–2 s; the edit drops them.
    - ``drop_false_start``: a false start (the first 1–3 s of the phrase, stopped), a
      short pause, then the whole phrase; the edit keeps the whole phrase only.
    - ``loop_marked_section``: a section of 2–5 s marked by a beep at its start and one
      ending at its end; the edit plays to the end marker, the section once more, and on.

    Returns:
        raw audio [S] (a whole number of frames long) and segments for ``render_edit``.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")
    if seconds < 12:
        raise ValueError(f"rule recordings need at least 12 seconds, got {seconds}")
    sample_rate, hop = features.sample_rate, features.hop_length
    total = _frames(seconds, features)

    def music_frames(frames: int) -> np.ndarray:
        return music(frames * hop / sample_rate, sample_rate, rng)[: frames * hop]

    if rule == "remove_silence":
        gaps = [_frames(rng.uniform(0.5, 2.0), features) for _ in range(int(rng.integers(2, 5)))]
        played = total - sum(gaps)
        shortest = _frames(1.0, features)
        parts = shortest + rng.multinomial(played - shortest * (len(gaps) + 1), np.full(len(gaps) + 1, 1 / (len(gaps) + 1)))
        audio = music_frames(played)
        pieces, segments, raw_at, played_at = [], [], 0, 0
        for index, part in enumerate(parts):
            piece = audio[played_at * hop : (played_at + part) * hop]
            pieces.append(_fade(piece, sample_rate, fade_in=index > 0, fade_out=index < len(gaps)))
            segments.append((raw_at, raw_at + int(part)))
            raw_at, played_at = raw_at + int(part), played_at + int(part)
            if index < len(gaps):
                pieces.append(_near_silence(gaps[index] * hop, rng))
                raw_at += gaps[index]
        return np.concatenate(pieces), segments

    if rule == "drop_false_start":
        false_start, pause = _frames(rng.uniform(1.0, 3.0), features), _frames(rng.uniform(0.3, 1.0), features)
        phrase = music_frames(total - false_start - pause)
        stopped = _fade(phrase[: false_start * hop], sample_rate, fade_in=False, fade_out=True, seconds=0.03)
        raw = np.concatenate([stopped, _near_silence(pause * hop, rng), phrase])
        return raw, [(false_start + pause, total)]

    # loop_marked_section
    section = _frames(rng.uniform(2.0, 5.0), features)
    start = int(rng.integers(round(0.15 * total), round(0.85 * total) - section))
    end = start + section
    raw = music_frames(total).copy()
    marker = _marker(sample_rate)
    raw[start * hop : start * hop + len(marker)] += marker
    raw[end * hop - len(marker) : end * hop] += marker
    return raw, [(0, end), (start, total)]


# ----------------------------------------------------------------------------- pairs


def make_conform_pair(
    seed: int, *, seconds: float, features: MelFeatures, processed: bool, strength: float = 1.0
) -> EditPair:
    """Music, a random conform edit of it, and (when ``processed``) post-processing."""
    rng = np.random.default_rng(seed)
    raw = music(seconds, features.sample_rate, rng)
    segments = random_conform_segments(features.frames_for(len(raw)), rng, frame_rate=features.frame_rate)
    edit, pointers = render_edit(raw, segments, features)
    processing = None
    if processed:
        edit, processing = process(edit, features.sample_rate, rng, strength=strength)
    name = f"conform_{seed:04d}" + ("_processed" if processed else "")
    return EditPair(name, raw, edit, pointers, segments, "conform", processing)


def make_rule_pair(seed: int, rule: str, *, seconds: float, features: MelFeatures) -> EditPair:
    """A recording made for ``rule`` and the rule's edit of it."""
    rng = np.random.default_rng(seed)
    raw, segments = rule_recording(rule, seconds, features, rng)
    edit, pointers = render_edit(raw, segments, features)
    return EditPair(f"{rule}_{seed:04d}", raw, edit, pointers, segments, rule)


def write_pointer_corpus(
    root: str | Path, pairs: list[EditPair], features: MelFeatures, *, labels: str = "pointers", wav_subtype: str = "FLOAT"
) -> list[str]:
    """Write pairs in the pointer-pair layout (ARCHITECTURE.md, "Input layouts").

    ``ROOT/raw/<name>.wav`` and ``ROOT/edit/<name>.wav`` at ``features.sample_rate``, and
    per ``labels``: ``ROOT/pointers/<name>.npy`` (int64), ``ROOT/edl/<name>.json`` (list of
    ``[raw_start_s, raw_end_s]`` in play order), or nothing (pointers come from alignment).

    Returns:
        the pair names written.
    """
    if labels not in LABELS:
        raise ValueError(f"labels must be one of {LABELS}, got {labels!r}")
    root = Path(root)
    for pair in pairs:
        write_wav(root / "raw" / f"{pair.name}.wav", pair.raw, features.sample_rate, wav_subtype)
        write_wav(root / "edit" / f"{pair.name}.wav", pair.edit, features.sample_rate, wav_subtype)
        if labels == "pointers":
            (root / "pointers").mkdir(parents=True, exist_ok=True)
            np.save(root / "pointers" / f"{pair.name}.npy", pair.pointers.astype(np.int64))
        elif labels == "edl":
            (root / "edl").mkdir(parents=True, exist_ok=True)
            edl = [[start / features.frame_rate, end / features.frame_rate] for start, end in pair.segments]
            (root / "edl" / f"{pair.name}.json").write_text(json.dumps(edl))
    return [pair.name for pair in pairs]
