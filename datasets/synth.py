"""Generated music for the example corpus, tests and benchmarks (no downloads).

Inputs are percussive (kick, snare and hi-hat patterns at a tempo), targets are tonal (a
chord progression with a melody, additive harmonics under an envelope). Every clip comes
from an explicit seed, so a corpus can be made again bit for bit.

Besides the audio, ``play_drums`` and ``play_chords`` return what they played (a "part":
hit times and kinds; key, bar length, progression and harmonics), from which ``arrange``
renders the pair's *arrangement* (design note 004): the target's chords played on the
input's drum hits, in the target's instrument. It is the pattern a fusion model should
write, and it is in neither source: the input has no pitch, the target never plays on the
drum hits.

Shape letters: S samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jingle.core.config import fail
from jingle.datasets.audio import write_wav

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

# I V vi IV as semitones above the key's tonic; each chord's first entry is its root.
PROGRESSION = ((0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12))
DRUM_KINDS = ("kick", "snare", "hat")


@dataclass(frozen=True)
class Style:
    """How a corpus's drums and chords are played. Every style is arranged by the same rule
    (``arrangement_notes``), so a model that learned the rule rather than one style's
    patterns arranges the other styles too.

    Attributes:
        tempo_bpm: (low, high) of the drums' uniform tempo.
        kick_probabilities: per sixteenth of a bar, the chance that the loop's kick plays it.
        snare_steps: the sixteenths of a bar with a snare.
        hat_every: a hat every this many sixteenths.
        swing: the off-beat sixteenths come this share of a sixteenth late.
        progression: the chords, semitones above the tonic, one per bar, cycled.
        melody_scale: the melody's scale degrees, semitones above the tonic an octave up.
        tonic_midi: (low, high) of the key's tonic, high excluded.
        bar_seconds: (low, high) of the chords' uniform bar length.
        harmonic_ratio: (low, high) of the instrument's partial amplitude ratio, drawn per
            partial: partial k has amplitude ratio_k ** k.
        partials: how many partials the instrument has.
    """

    name: str
    tempo_bpm: tuple[float, float]
    kick_probabilities: tuple[float, ...]
    snare_steps: tuple[int, ...]
    hat_every: int
    swing: float
    progression: tuple[tuple[int, ...], ...]
    melody_scale: tuple[int, ...]
    tonic_midi: tuple[int, int]
    bar_seconds: tuple[float, float]
    harmonic_ratio: tuple[float, float]
    partials: int


STYLES = {
    # the corpus of every test, benchmark and the demo: pop grooves, major I V vi IV
    "pop": Style(
        name="pop", tempo_bpm=(84, 140),
        kick_probabilities=(0.95, 0, 0.15, 0, 0.1, 0, 0.4, 0, 0.9, 0, 0.2, 0.3, 0.05, 0, 0.3, 0),
        snare_steps=(4, 12), hat_every=2, swing=0.0, progression=PROGRESSION, melody_scale=(0, 2, 4, 5, 7, 9, 11, 12),
        tonic_midi=(48, 60), bar_seconds=(1.6, 2.6), harmonic_ratio=(0.2, 0.7), partials=6,
    ),
    # held out from training: slower swung half-time grooves with hats on every sixteenth,
    # a minor i VI III VII in another register, longer bars, a brighter instrument
    "other": Style(
        name="other", tempo_bpm=(60, 80),
        kick_probabilities=(0.95, 0, 0, 0.35, 0, 0, 0.25, 0, 0, 0.6, 0, 0, 0.1, 0, 0.35, 0),
        snare_steps=(8,), hat_every=1, swing=0.3, progression=((0, 3, 7), (8, 12, 15), (3, 7, 10), (10, 14, 17)),
        melody_scale=(0, 2, 3, 5, 7, 8, 10, 12), tonic_midi=(40, 52), bar_seconds=(2.8, 3.6), harmonic_ratio=(0.5, 0.85),
        partials=8,
    ),
}


@dataclass(frozen=True)
class DrumHit:
    seconds: float  # onset time
    kind: str  # one of DRUM_KINDS
    gain: float  # linear gain before the part's peak normalisation


@dataclass(frozen=True)
class Note:
    midi: float
    seconds: float  # onset time
    duration_seconds: float
    gain: float


@dataclass(frozen=True, eq=False)
class DrumPart:
    """A drum loop and its score. ``audio`` is what ``drums`` returns."""

    audio: np.ndarray  # [S] float32
    sample_rate: int
    seconds: float
    tempo_bpm: float
    hits: tuple[DrumHit, ...]  # in time order


@dataclass(frozen=True, eq=False)
class ChordPart:
    """A chord progression with a melody and its score. ``audio`` is what ``chords`` returns."""

    audio: np.ndarray  # [S] float32
    sample_rate: int
    seconds: float
    root_midi: int  # the key's tonic
    bar_seconds: float  # one chord per bar
    progression: tuple[tuple[int, ...], ...]  # semitones above root_midi, cycled bar by bar
    harmonics: tuple[float, ...]  # amplitude of partial k + 1: the instrument's timbre
    notes: tuple[Note, ...]  # chord and melody notes that sound in the clip, in the order played

    def chord_at(self, seconds: float) -> tuple[int, ...]:
        """MIDI notes of the chord sounding at ``seconds``."""
        bar = int(seconds // self.bar_seconds)
        return tuple(self.root_midi + interval for interval in self.progression[bar % len(self.progression)])


def _envelope(length: int, sample_rate: int, decay_seconds: float) -> np.ndarray:
    t = np.arange(length) / sample_rate
    return np.exp(-t / decay_seconds)


def _tone(midi: float, t: np.ndarray, harmonics) -> np.ndarray:
    """Additive tone: partial k + 1 at amplitude ``harmonics[k]``. [S] for t [S] seconds."""
    frequency = 440.0 * 2 ** ((midi - 69) / 12)
    return sum(h * np.sin(2 * np.pi * frequency * (k + 1) * t) for k, h in enumerate(harmonics))


def play_drums(seconds: float, sample_rate: int, rng: np.random.Generator, style: Style = STYLES["pop"]) -> DrumPart:
    """A drum loop: kick on a pattern, snare on the back-beat, hats (eighths in pop)."""
    tempo = rng.uniform(*style.tempo_bpm)
    step = 60.0 / tempo / 4  # sixteenth note, seconds
    length = round(seconds * sample_rate)
    out = np.zeros(length, dtype=np.float64)
    kick_pattern = rng.random(16) < np.array(style.kick_probabilities)
    hit = round(0.35 * sample_rate)
    t = np.arange(hit) / sample_rate
    kick = np.sin(2 * np.pi * (45 * t + 110 * 0.04 * (1 - np.exp(-t / 0.04)))) * _envelope(hit, sample_rate, 0.09)
    snare = (0.6 * rng.standard_normal(hit) + 0.5 * np.sin(2 * np.pi * 185 * t)) * _envelope(hit, sample_rate, 0.06)
    hat = np.diff(rng.standard_normal(hit + 1)) * _envelope(hit, sample_rate, 0.012)
    hits = []
    for index in range(int(seconds / step)):
        position = index % 16
        onset = (index + style.swing * (position % 2)) * step  # off-beat sixteenths swung late
        start = round(onset * sample_rate)
        if start >= length:
            break
        # the hat's gain is drawn on every step, played or not: the draws fix the audio
        for kind, sound, gain, on in (
            ("kick", kick, 0.9, kick_pattern[position]),
            ("snare", snare, 0.55, position in style.snare_steps),
            ("hat", hat, 0.25 * rng.uniform(0.6, 1.0), position % style.hat_every == 0),
        ):
            if on:
                end = min(length, start + hit)
                out[start:end] += gain * sound[: end - start]
                hits.append(DrumHit(onset, kind, float(gain)))
    audio = (0.8 * out / max(1e-9, np.abs(out).max())).astype(np.float32)
    return DrumPart(audio, sample_rate, seconds, float(tempo), tuple(hits))


def play_chords(seconds: float, sample_rate: int, rng: np.random.Generator, style: Style = STYLES["pop"]) -> ChordPart:
    """A four-chord progression with a melody, in a random key."""
    low, high = style.tonic_midi
    root = low + int(rng.integers(0, high - low))  # MIDI note of the key's tonic
    bar = rng.uniform(*style.bar_seconds)
    length = round(seconds * sample_rate)
    out = np.zeros(length, dtype=np.float64)
    harmonics = rng.uniform(*style.harmonic_ratio, size=style.partials) ** np.arange(1, style.partials + 1)
    notes = []

    def note(midi: float, start: float, duration: float, gain: float) -> None:
        first, count = round(start * sample_rate), round(duration * sample_rate)
        count = min(count, length - first)
        if count <= 0:
            return
        notes.append(Note(float(midi), float(start), float(duration), gain))
        t = np.arange(count) / sample_rate
        tone = _tone(midi, t, harmonics)
        attack = np.minimum(1.0, t / 0.02)
        release = np.minimum(1.0, (duration - t) / 0.08).clip(0)
        out[first : first + count] += gain * tone * attack * release * np.exp(-t / (duration * 1.5))

    scale = np.array(style.melody_scale)
    for index in range(int(np.ceil(seconds / bar))):
        chord = style.progression[index % len(style.progression)]
        for interval in chord:
            note(root + interval, index * bar, bar, 0.25)
        for beat in range(4):
            if rng.random() < 0.8:
                note(root + 12 + scale[rng.integers(0, len(scale))], index * bar + beat * bar / 4, bar / 4, 0.2)
    audio = (0.7 * out / max(1e-9, np.abs(out).max())).astype(np.float32)
    harmonics_played = tuple(float(h) for h in harmonics)
    return ChordPart(audio, sample_rate, seconds, root, float(bar), style.progression, harmonics_played, tuple(notes))


def drums(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A drum loop: kick on a pattern, snare on the back-beat, hats on eighths. [S]"""
    return play_drums(seconds, sample_rate, rng).audio


def chords(seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """A four-chord progression with a melody, in a random key. [S]"""
    return play_chords(seconds, sample_rate, rng).audio


@dataclass(frozen=True)
class Voicing:
    """How one kind of drum hit is played on the target's instrument."""

    gain: float  # per note
    decay_seconds: float  # exponential decay after the attack
    length_seconds: float  # the note is cut (with a short release) after this


# Piano-like: a few-millisecond attack, then a decay; the kick's low root rings longest.
VOICINGS = {
    "kick": Voicing(gain=0.5, decay_seconds=0.30, length_seconds=0.9),
    "snare": Voicing(gain=0.28, decay_seconds=0.22, length_seconds=0.7),
    "hat": Voicing(gain=0.3, decay_seconds=0.10, length_seconds=0.35),
}
_ATTACK_SECONDS = 0.004
_RELEASE_SECONDS = 0.05


def arrangement_notes(drum_part: DrumPart, chord_part: ChordPart) -> list[tuple[str, Note]]:
    """The notes of the arrangement: one to three per drum hit, (drum kind, note).

    - kick: the root of the chord sounding at the hit, an octave below the chords;
    - snare: the full chord, in the register the target plays it in;
    - hat: one chord tone an octave up, the next one up the chord on each hat of a bar
      (an arpeggio), at the hat's accent.
    """
    notes = []
    hats_in_bar, last_bar = 0, -1
    for hit in drum_part.hits:
        if hit.seconds >= chord_part.seconds:
            break
        chord = chord_part.chord_at(hit.seconds)
        voicing = VOICINGS[hit.kind]
        if hit.kind == "kick":
            midis = [chord[0] - 12]
            gain = voicing.gain
        elif hit.kind == "snare":
            midis = list(chord)
            gain = voicing.gain
        else:
            bar = int(hit.seconds // chord_part.bar_seconds)
            hats_in_bar = hats_in_bar + 1 if bar == last_bar else 0
            last_bar = bar
            midis = [chord[hats_in_bar % len(chord)] + 12]
            gain = voicing.gain * hit.gain / 0.25  # the hat's accent, 0.6 to 1
        notes.extend((hit.kind, Note(float(midi), hit.seconds, voicing.length_seconds, gain)) for midi in midis)
    return notes


def arrange(drum_part: DrumPart, chord_part: ChordPart, sample_rate: int) -> np.ndarray:
    """Render the arrangement of a pair (design note 004): the target's chords on the input's hits.

    Same key, progression, bar timing and instrument (``harmonics``) as ``chord_part``,
    rhythm (hit times, kinds and accents) of ``drum_part``, length of ``chord_part``,
    peak 0.7 like the target. Deterministic: no random draws.

    Returns:
        [S] float32 at ``sample_rate``.
    """
    length = round(chord_part.seconds * sample_rate)
    out = np.zeros(length, dtype=np.float64)
    cache: dict[tuple[str, float], np.ndarray] = {}
    for kind, note in arrangement_notes(drum_part, chord_part):
        key = (kind, note.midi)
        if key not in cache:
            voicing = VOICINGS[kind]
            t = np.arange(round(voicing.length_seconds * sample_rate)) / sample_rate
            attack = np.minimum(1.0, t / _ATTACK_SECONDS)
            release = np.minimum(1.0, (voicing.length_seconds - t) / _RELEASE_SECONDS).clip(0)
            decay = np.exp(-t / voicing.decay_seconds)
            cache[key] = _tone(note.midi, t, chord_part.harmonics) * attack * release * decay
        sound = cache[key]
        first = round(note.seconds * sample_rate)
        end = min(length, first + len(sound))
        out[first:end] += note.gain * sound[: end - first]
    return (0.7 * out / max(1e-9, np.abs(out).max())).astype(np.float32)


@dataclass(frozen=True)
class CorpusSpec:
    pairs: int = 8
    min_seconds: float = 20.0
    max_seconds: float = 40.0
    seed: int = 0
    mixed_formats: bool = True
    style: str = "pop"  # a key of STYLES

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            fail("style", f"must be one of {sorted(STYLES)}, got {self.style!r}")


@dataclass(frozen=True, eq=False)
class GeneratedPair:
    """One pair of the corpus in memory: its parts (audio at their own rates) and id."""

    pair_id: str
    seconds: float
    input: DrumPart
    target: ChordPart

    def arrangement(self, sample_rate: int | None = None) -> np.ndarray:
        """The pair's arrangement, [S] at ``sample_rate`` (default: the target's)."""
        return arrange(self.input, self.target, sample_rate or self.target.sample_rate)


def pair_format(index: int, role: str, spec: CorpusSpec) -> tuple[int, int, str]:
    """(sample rate, channels, subtype) of pair ``index``'s ``role`` file.

    The arrangement is written like the target: it is the target's instrument and key, and
    sharing the target's format keeps the two comparable file for file.
    """
    if not spec.mixed_formats:
        return 24_000, 1, "PCM_16"
    return WAV_FORMATS[(index + (role != "input")) % len(WAV_FORMATS)]


def generate_pair(index: int, spec: CorpusSpec = CorpusSpec()) -> GeneratedPair:
    """Pair ``index`` of the corpus ``spec`` describes, drawn from seed ``(spec.seed, index)``."""
    rng = np.random.default_rng([spec.seed, index])
    seconds = float(rng.uniform(spec.min_seconds, spec.max_seconds))
    style = STYLES[spec.style]
    drum_part = play_drums(seconds, pair_format(index, "input", spec)[0], rng, style)
    chord_part = play_chords(seconds, pair_format(index, "target", spec)[0], rng, style)
    return GeneratedPair(f"pair_{index:04d}", seconds, drum_part, chord_part)


def write_fusion_corpus(
    root: str | Path, spec: CorpusSpec = CorpusSpec(), *, first_index: int = 0, arrangements: bool = False
) -> list[str]:
    """Write ``ROOT/input/pair_NNNN.wav`` (drums) and ``ROOT/target/pair_NNNN.wav`` (chords).

    Pair ``i`` is generated from the seed ``(seed, i)``, so adding pairs with ``first_index``
    extends a corpus without changing the pairs already there.

    Args:
        arrangements: also write ``ROOT/arrangement/pair_NNNN.wav``, the pair's rendered
            arrangement (``arrange``), in the target's format (rate, channels, subtype).
            Pair discovery ignores the folder; the input and target files are the same
            either way.

    Returns:
        the pair ids written.
    """
    root = Path(root)
    ids = []
    for index in range(first_index, first_index + spec.pairs):
        pair = generate_pair(index, spec)
        roles = {"input": pair.input.audio, "target": pair.target.audio}
        if arrangements:
            roles["arrangement"] = pair.arrangement()
        for role, mono in roles.items():
            sample_rate, channels, subtype = pair_format(index, role, spec)
            audio = mono if channels == 1 else np.stack([mono, 0.9 * mono], axis=1)
            write_wav(root / role / f"{pair.pair_id}.wav", audio, sample_rate, subtype)
        ids.append(pair.pair_id)
    return ids
