"""A fixed, weight-independent measure of arrangement (design note 004).

A fusion output is an *arrangement* when it plays the input's rhythm as notes in the
target's harmony and timbre, and is a pattern in neither source: not a copy of either, not
a mix of the two, not a stationary drone, not the target's harmony smeared in time and
pulsing with the input. Each part is measured by one figure in [0, 1] from the output and
the two sources alone (no learned weights, so the measure cannot drift with the model it
judges), and ``arrangement_score`` combines the six.

Every clip is resampled to ``ANALYSIS_SAMPLE_RATE``, cut to the length it shares with the
others, and scaled to unit RMS before analysis, so that the score ignores the output's
gain and the clips' sample rates. One STFT per clip (``N_FFT``, ``HOP_LENGTH``, Hann,
centred frames) gives the power spectrum, the magnitude and power mel spectrograms
(``N_MELS`` bands), the onset strength and the frame RMS; chroma comes from a constant-Q
transform on the same hop (``librosa.feature.chroma_cqt``, ``tuning=0.0``), because the
STFT's 10.8 Hz bins are wider than a semitone below ~180 Hz. Every clip is also
transcribed into notes by an independent transcriber (``evaluation/transcription.py``:
Spotify's Basic Pitch), and the input's onsets are detected (``evaluation/notes.py``).

The scored figures (``SCORE_FIGURES``):

- ``rhythm`` = ``note_onset_f1_above_chance``: the F1 of the output's note onsets against
  the input's onsets (mir_eval, ±50 ms; ``evaluation/notes.py``), above the F1 the same
  onsets reach shifted to random times: notes that start on the hits count, bursts
  without a pitch do not, and onsets that match only as often as random ones do count 0.
- ``harmony`` = ``pitch_class_f1``: the harmonic mean of ``pitch_class_precision`` (the
  share of the output's note-time in a pitch class the target sounds then) and
  ``pitch_class_recall`` (the share of the target's sounding pitch classes over time
  that the output also sounds).
- ``clarity`` = ``note_clarity``: the share of the output's energy on the partials of its
  transcribed notes while they sound.
- ``timbre`` = d_input / (d_input + d_target), the Euclidean distances between the
  output's spectral envelope and each source's. The envelope is the orthonormal DCT of
  the log long-term mel power spectrum (floored ``TIMBRE_FLOOR_DB`` below its loudest
  band), coefficients 1..``TIMBRE_COEFFICIENTS``: the MFCCs of the clip's average
  spectrum without c0, so that gain drops out. 1 at the target's envelope, 0 at the
  input's.
- ``newness``: the fraction of the output's magnitude-mel energy (sum over frames and
  bands of squares) that no non-negative combination ``a * input_frame + b *
  target_frame`` of the sources' frames at the same time explains: per frame a
  two-vector NNLS, solved in closed form for all frames at once. Copies and mixes of the
  sources, and the target under the input's loudness, are explained (~0); a new pattern
  is not (the rendered arrangement: ~0.4-0.6).
- ``movement`` = min(1, v / lo, hi / v) ** 2, with v the output's
  ``rms_variation_output`` (coefficient of variation of the frame RMS after a
  ``MOVEMENT_SMOOTHING_FRAMES`` moving mean) and [lo, hi] the band the two sources'
  variations span: a drone (~0.07) and a scatter of bursts in silence (~3) score low.

Reported, not scored (``FIGURE_NAMES``; None where undefined, never NaN):

- the note figures' parts (``evaluation/notes.py``: onset precision and recall, the onset F1
  against the target's notes, pitch-class precision and recall, notes per second);
- the spectral view the score used before it heard notes: ``onset_corr_input`` /
  ``onset_corr_target`` (Pearson correlation over frames of the onset strength, max-
  filtered over ``ONSET_TOLERANCE_FRAMES``), ``onset_rhythm`` = clip(corr_input -
  corr_target, 0, 1); ``chroma_corr_target`` / ``chroma_corr_input`` (per-frame chroma
  correlation, weighted by both clips' frame RMS), ``harmony_motion_corr`` (pooled
  chroma over ``HARMONY_POOL_FRAMES`` with each clip's key removed, correlated: the
  chord changes), ``harmony_motion_target`` (the target's moving share of chroma
  energy), ``chroma_harmony`` = min(motion, frame-by-frame), or the frame-by-frame one
  alone for a target that holds one chord (below ``STATIC_HARMONY_LIMIT``);
- ``timbre_distance_input`` / ``_target``, ``rms_variation_output`` / ``_input`` /
  ``_target``;
- ``envelope_corr_input`` / ``envelope_corr_target`` / ``envelope_cost``: note 003's
  measure as defined there (max |x| over 250 equal parts, Pearson with n - 1 and + 1e-8;
  cost = -ln(1 - min(|corr_input|, 0.999)) - ln(1 - min(|corr_target|, 0.999))). It
  prefers a stationary output (cost ~0.1) to a real arrangement (~1.2-1.9);
- ``compared_seconds``; ``output_rms_dbfs``: the output's RMS level as given.

Why the note figures replaced the spectral rhythm and harmony in the score: on real
pairs (issue 17), the rank correlation between ``onset_corr_input`` and a transcriber's
note-onset F1 over 24 outputs was -0.07: broadband bursts on the input's hits correlate
with its onset strength as well as notes starting on them (a copy of the drums scores
perfect rhythm and plays no note), so a model writing the target's harmony smeared in
time with bursts on the hits scored level with a hand-made arrangement. The onset F1 of
transcribed notes tells the two apart, and so do pitch classes of notes (not of a
spectrum's chroma) and the energy the notes account for.

Shape letters: S samples, F STFT bins, M mel bands, T frames, C chroma bins (12),
N envelope parts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Mapping

import librosa
import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.sparse

from jingle.evaluation.cqt_cache import keep_cqt_filters_in_memory
from jingle.evaluation.notes import NOTE_FIGURE_NAMES, NoteSources, analyse_note_sources, detect_onsets, note_figures
from jingle.evaluation.transcription import Transcription, transcribe

HIGHER_IS_BETTER = True

ANALYSIS_SAMPLE_RATE = 22_050
N_FFT = 2048  # 93 ms
HOP_LENGTH = 512  # 23 ms, 43 frames/s
FRAME_RATE = ANALYSIS_SAMPLE_RATE / HOP_LENGTH
N_MELS = 128
ONSET_TOLERANCE_FRAMES = 3  # max-filter width: +-1 frame, +-23 ms
TIMBRE_COEFFICIENTS = 20
TIMBRE_FLOOR_DB = -60.0  # below the loudest band: codec noise and 8-bit hiss vary from decode to decode
MOVEMENT_SMOOTHING_FRAMES = 5  # 116 ms: a note's rise and fall counts, noise's jitter does not
ENVELOPE_PARTS = 250  # note 003
ENVELOPE_CLAMP = 0.999  # note 003
HARMONY_POOL_FRAMES = 22  # ~0.5 s at 43 frames/s: a beat at 120 bpm
STATIC_HARMONY_LIMIT = 0.02  # the target's moving share of chroma energy below which it holds one chord
FIGURE_FLOOR = 0.01  # the least a figure contributes to the score
# Below this RMS (-140 dBFS, under 24-bit resolution) an output counts as silent.
SILENCE_RMS = 1e-7

# the parts of an arrangement, combined by ``arrangement_score``
SCORE_FIGURES = ("rhythm", "harmony", "clarity", "timbre", "newness", "movement")
# every key of ``ArrangementScore.figures`` (the module docstring defines each)
FIGURE_NAMES = (
    "compared_seconds", "output_rms_dbfs",
    "rhythm", "harmony", "clarity",
    *NOTE_FIGURE_NAMES,
    "onset_corr_input", "onset_corr_target", "onset_rhythm",
    "chroma_corr_target", "chroma_corr_input", "harmony_motion_corr", "harmony_motion_target", "chroma_harmony",
    "timbre_distance_input", "timbre_distance_target", "timbre",
    "newness",
    "rms_variation_output", "rms_variation_input", "rms_variation_target", "movement",
    "envelope_corr_input", "envelope_corr_target", "envelope_cost",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class ClipFeatures:
    """One clip's features at the analysis rate, unit RMS. T frames, S samples."""

    audio: np.ndarray  # [S] float32
    power: np.ndarray  # [F, T] STFT power
    mel_magnitude: np.ndarray  # [M, T]
    mel_power: np.ndarray  # [M, T]
    chroma: np.ndarray  # [C, T], centred and unit-norm per frame (zero where flat)
    onset: np.ndarray  # [T], max-filtered
    frame_rms: np.ndarray  # [T]
    transcription: Transcription  # its notes


@dataclass(frozen=True, eq=False)
class SourceFeatures:
    """The features of one pair's input and target, computed once by ``analyse_sources``."""

    input: ClipFeatures
    target: ClipFeatures
    seconds: float  # length both sources share, at the analysis rate
    notes: NoteSources  # the input's onsets and the target's sounding pitch classes


@dataclass(frozen=True)
class ArrangementScore:
    """``score`` in [0, 1] (higher is better) and the figures it comes from."""

    score: float
    figures: dict[str, float | None]  # FIGURE_NAMES -> value; None where undefined, never NaN


def _resample(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono [S] audio, got shape {audio.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or inf samples")
    if sample_rate == ANALYSIS_SAMPLE_RATE:
        return audio
    return librosa.resample(audio, orig_sr=sample_rate, target_sr=ANALYSIS_SAMPLE_RATE).astype(np.float32)


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


keep_cqt_filters_in_memory()


# sparse: each mel band covers a few STFT bins (10x faster than the dense product)
_MEL_BASIS = scipy.sparse.csr_array(
    librosa.filters.mel(sr=ANALYSIS_SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS).astype(np.float32)
)  # [M, F]


def _analyse(audio: np.ndarray) -> ClipFeatures:
    """Features of a clip at the analysis rate (any gain; scaled to unit RMS here)."""
    rms = _rms(audio)
    audio = (audio / rms if rms > 0 else audio).astype(np.float32)
    if len(audio) < N_FFT:
        audio = np.pad(audio, (0, N_FFT - len(audio)))
    spectrum = np.ascontiguousarray(np.abs(librosa.stft(audio, n_fft=N_FFT, hop_length=HOP_LENGTH)))  # [F, T]
    power = spectrum**2  # [F, T]
    mel_magnitude = _MEL_BASIS @ spectrum  # [M, T]
    mel_power = _MEL_BASIS @ power  # [M, T]
    mel_db = librosa.power_to_db(mel_power, ref=1.0, amin=1e-10, top_db=80.0)  # [M, T]
    onset = librosa.onset.onset_strength(S=mel_db, sr=ANALYSIS_SAMPLE_RATE, hop_length=HOP_LENGTH)  # [T]
    onset = scipy.ndimage.maximum_filter1d(onset[: power.shape[1]], ONSET_TOLERANCE_FRAMES, mode="nearest")
    # constant-Q, not STFT, chroma: at N_FFT the STFT bins (10.8 Hz) are wider than a semitone
    # below ~180 Hz, where bass notes (a kick's root) would smear over several pitch classes
    with warnings.catch_warnings():
        # on clips under ~4 s the lowest octaves' downsampled signal is shorter than their
        # FFT; librosa pads it (the octave's few frames are still valid) but warns each time
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        chroma = librosa.feature.chroma_cqt(
            y=audio, sr=ANALYSIS_SAMPLE_RATE, hop_length=HOP_LENGTH, tuning=0.0, norm=None
        )[:, : power.shape[1]]  # [C, T]
    chroma = chroma - chroma.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(chroma, axis=0, keepdims=True)  # [1, T]
    chroma = np.divide(chroma, norm, out=np.zeros_like(chroma), where=norm > 1e-8 * max(1e-30, float(norm.max())))
    frame_rms = np.sqrt(power.sum(axis=0))  # [T], proportional to the frame's RMS
    return ClipFeatures(audio, power, mel_magnitude, mel_power, chroma, onset, frame_rms, transcribe(audio, ANALYSIS_SAMPLE_RATE))


def analyse_clip(audio: np.ndarray, sample_rate: int) -> ClipFeatures:
    """One clip's features (``audio`` [S] at ``sample_rate``), e.g. to draw what the score reads."""
    return _analyse(_resample(audio, sample_rate))


def analyse_sources(input: np.ndarray, target: np.ndarray, sample_rate: int) -> SourceFeatures:
    """Resample and analyse one pair's sources once, for any number of ``score_output`` calls.

    Args:
        input, target: [S] mono float at ``sample_rate`` (lengths may differ by a little;
            the shorter one sets the compared length).
    """
    input_audio, target_audio = _resample(input, sample_rate), _resample(target, sample_rate)
    length = min(len(input_audio), len(target_audio))
    if length == 0:
        raise ValueError("input and target must hold samples")
    input_features, target_features = _analyse(input_audio[:length]), _analyse(target_audio[:length])
    seconds = length / ANALYSIS_SAMPLE_RATE
    onsets = detect_onsets(input_audio[:length], ANALYSIS_SAMPLE_RATE)
    return SourceFeatures(input_features, target_features, seconds, analyse_note_sources(onsets, target_features.transcription, seconds))


# --------------------------------------------------------------------------- figures


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    x, y = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / denominator if denominator > 0 else None


def _harmony_motion(clip: ClipFeatures, frames: int) -> tuple[np.ndarray, float]:
    """The clip's RMS-weighted chroma pooled over ``HARMONY_POOL_FRAMES``, less its
    long-term mean [C, T], and the share of the pooled energy that moves."""
    pooled = scipy.ndimage.uniform_filter1d(
        clip.chroma[:, :frames] * clip.frame_rms[:frames], HARMONY_POOL_FRAMES, axis=1, mode="nearest"
    )  # [C, T]
    moving = pooled - pooled.mean(axis=1, keepdims=True)  # [C, T]
    total = float(np.square(pooled).sum())
    return moving, float(np.square(moving).sum()) / total if total > 0 else 0.0


def _flat_corr(x: np.ndarray, y: np.ndarray) -> float | None:
    denominator = math.sqrt(float(np.square(x).sum()) * float(np.square(y).sum()))
    return float((x * y).sum()) / denominator if denominator > 0 else None


def _weighted_chroma_corr(output: ClipFeatures, source: ClipFeatures, frames: int) -> float | None:
    per_frame = (output.chroma[:, :frames] * source.chroma[:, :frames]).sum(axis=0)  # [T]
    weights = output.frame_rms[:frames] * source.frame_rms[:frames]  # [T]
    total = float(weights.sum())
    return float(per_frame @ weights) / total if total > 0 else None


def _spectral_envelope(mel_power: np.ndarray) -> np.ndarray:
    """MFCCs c1..c20 of the long-term average spectrum of ``mel_power`` [M, T]. [TIMBRE_COEFFICIENTS]

    Bands more than TIMBRE_FLOOR_DB below the loudest read as the floor: what lies there
    (a codec's noise, 8-bit quantisation) varies from one decode to the next and is no
    part of an instrument's timbre.
    """
    long_term = mel_power.mean(axis=1)  # [M]
    long_term = np.maximum(long_term, max(float(long_term.max()), 1e-30) * 10 ** (TIMBRE_FLOOR_DB / 10))
    return scipy.fft.dct(np.log(long_term), type=2, norm="ortho")[1 : TIMBRE_COEFFICIENTS + 1]


def _newness(output: np.ndarray, input: np.ndarray, target: np.ndarray) -> float | None:
    """Unexplained energy fraction of ``output`` [M, T] by NNLS on ``input``, ``target`` frames.

    Per frame, min ||y - a x1 - b x2||^2 over a, b >= 0. The optimum is the unconstrained
    least-squares solution when both coefficients are >= 0, else the best of the one-vector
    fits (a only, b only) or zero; all four are evaluated for every frame at once.
    """
    def dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x * y).sum(axis=0, dtype=np.float64)  # [T]

    yy = dot(output, output)
    total = float(yy.sum())
    if total <= 0:
        return None
    x1x1, x2x2, x1x2 = dot(input, input), dot(target, target), dot(input, target)
    x1y, x2y = dot(input, output), dot(target, output)
    tiny = 1e-12 * max(float(x1x1.max()), float(x2x2.max()), 1e-30)

    def residual(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return yy - 2 * (a * x1y + b * x2y) + a * a * x1x1 + 2 * a * b * x1x2 + b * b * x2x2

    determinant = x1x1 * x2x2 - x1x2**2
    safe = np.where(determinant > tiny * (x1x1 + x2x2), determinant, np.inf)
    a_both, b_both = (x2x2 * x1y - x1x2 * x2y) / safe, (x1x1 * x2y - x1x2 * x1y) / safe
    both_ok = np.isfinite(safe) & (a_both >= 0) & (b_both >= 0)
    a_only = np.where(x1x1 > tiny, np.maximum(x1y, 0) / np.maximum(x1x1, tiny), 0.0)
    b_only = np.where(x2x2 > tiny, np.maximum(x2y, 0) / np.maximum(x2x2, tiny), 0.0)
    zero = np.zeros_like(yy)
    candidates = np.stack(
        [
            np.where(both_ok, residual(a_both, b_both), np.inf),
            residual(a_only, zero),
            residual(zero, b_only),
            yy,
        ]
    )  # [4, T]
    unexplained = np.clip(candidates.min(axis=0), 0.0, None)  # [T]
    return float(np.clip(unexplained.sum() / total, 0.0, 1.0))


def _variation(frame_rms: np.ndarray) -> float | None:
    """Coefficient of variation of the frame RMS after a MOVEMENT_SMOOTHING_FRAMES moving mean."""
    smooth = scipy.ndimage.uniform_filter1d(frame_rms, MOVEMENT_SMOOTHING_FRAMES, mode="nearest")  # [T]
    mean = float(smooth.mean())
    return float(smooth.std()) / mean if mean > 0 else None


def _movement(output: float | None, input: float | None, target: float | None) -> float | None:
    if output is None or input is None or target is None:
        return None
    low, high = min(input, target), max(input, target)
    if output <= 0 or low <= 0:
        return 0.0
    return min(1.0, output / low, high / output) ** 2


def _note_003_envelope(audio: np.ndarray) -> np.ndarray:
    segment = len(audio) // ENVELOPE_PARTS
    return np.abs(audio[: segment * ENVELOPE_PARTS]).reshape(ENVELOPE_PARTS, segment).max(axis=1)  # [N]


def _note_003_pearson(x: np.ndarray, y: np.ndarray) -> float:
    n = len(x)
    x, y = x - x.mean(), y - y.mean()
    covariance = float(x @ y) / (n - 1)
    std_x, std_y = math.sqrt(float(x @ x) / (n - 1)), math.sqrt(float(y @ y) / (n - 1))
    return min(1.0, max(-1.0, covariance / (std_x * std_y + 1e-8)))


def _note_003_figures(output: np.ndarray, input: np.ndarray, target: np.ndarray) -> dict[str, float | None]:
    if len(output) < ENVELOPE_PARTS:
        return {"envelope_corr_input": None, "envelope_corr_target": None, "envelope_cost": None}
    out_env = _note_003_envelope(output.astype(np.float64))
    corr_input = _note_003_pearson(_note_003_envelope(input.astype(np.float64)), out_env)
    corr_target = _note_003_pearson(_note_003_envelope(target.astype(np.float64)), out_env)
    cost = -math.log(1 - min(abs(corr_input), ENVELOPE_CLAMP)) - math.log(1 - min(abs(corr_target), ENVELOPE_CLAMP))
    return {"envelope_corr_input": corr_input, "envelope_corr_target": corr_target, "envelope_cost": cost}


# --------------------------------------------------------------------------- score

def arrangement_score(figures: Mapping[str, float | None]) -> float:
    """THE arrangement score, from the six part figures: their geometric mean, each floored.

    score = (prod over f in SCORE_FIGURES of max(f, FIGURE_FLOOR)) ** (1 / 6)

    Why this form:
    - An arrangement needs every part at once (notes on the input's hits, in the target's
      pitch classes and timbre, clear, new, moving), and each shortcut a loss can settle
      on lacks one or two of them: a copy of the target has few notes on the hits, a copy
      of the input no notes at all, a mix and the copies no newness, a drone no onsets or
      movement, noise and broadband bursts no clarity, the target's harmony smeared under
      the input's loudness neither clear notes nor onsets on the hits. A product makes a
      missing part pull the whole score down, whatever the others do; an average would
      let five good parts buy back a missing one.
    - The geometric mean keeps the product on the scale of one figure (an output with
      every figure at 0.5 scores 0.5), so scores are comparable across runs.
    - The floor keeps one figure at exactly 0 from erasing all differences between
      outputs (training needs to see progress on the others) and makes a missing part
      cost a fixed factor, FIGURE_FLOOR ** (1 / 6) ≈ 0.46.
    - The parts are weighted alike: nothing in note 004 ranks one above another.
    - Rhythm, harmony and clarity are heard as notes, by a transcriber, not read off a
      spectrum (the module docstring says why); the spectral figures stay reported.
    - Note 003's envelope cost is left out (see the module docstring).

    A figure that is None (undefined: e.g. a silent output) counts as 0, i.e. the floor.
    """
    product = 1.0
    for name in SCORE_FIGURES:
        value = figures.get(name)
        product *= max(FIGURE_FLOOR, float(value) if value is not None and math.isfinite(value) else 0.0)
    return product ** (1.0 / len(SCORE_FIGURES))


def score_output(sources: SourceFeatures, output: np.ndarray, sample_rate: int) -> ArrangementScore:
    """Score one output against its pair's sources.

    Args:
        sources: from ``analyse_sources`` on the pair's input and target.
        output: [S] mono float at ``sample_rate``; any gain, any length (the part it
            shares with the sources is compared).
    Returns:
        ``ArrangementScore``: every name of ``FIGURE_NAMES`` in ``figures``. A silent output
        (RMS under ``SILENCE_RMS``) or one shorter than half an FFT frame has every figure
        None but the first two, and the floor score ``FIGURE_FLOOR``; so has an output
        holding NaN or inf (a diverged model), whose level is None too.
    """
    output = np.asarray(output, dtype=np.float32)
    if not np.all(np.isfinite(output)):
        figures = dict.fromkeys(FIGURE_NAMES)
        figures["compared_seconds"] = min(len(output) / sample_rate, sources.seconds)
        return ArrangementScore(arrangement_score(figures), figures)
    audio = _resample(output, sample_rate)
    length = min(len(audio), len(sources.input.audio))
    audio = audio[:length]  # [S]
    figures: dict[str, float | None] = dict.fromkeys(FIGURE_NAMES)
    figures["compared_seconds"] = length / ANALYSIS_SAMPLE_RATE
    rms = _rms(audio)
    figures["output_rms_dbfs"] = 20 * math.log10(rms) if rms > 0 else None
    if rms < SILENCE_RMS or length < N_FFT // 2:
        return ArrangementScore(arrangement_score(figures), figures)

    out, inp, tgt = _analyse(audio), sources.input, sources.target
    frames = min(len(out.onset), len(inp.onset))  # the sources may run on past the output

    onset_input = _pearson(out.onset[:frames], inp.onset[:frames])
    onset_target = _pearson(out.onset[:frames], tgt.onset[:frames])
    figures["onset_corr_input"], figures["onset_corr_target"] = onset_input, onset_target
    if onset_input is not None:
        figures["onset_rhythm"] = float(np.clip(onset_input - (onset_target or 0.0), 0.0, 1.0))

    chroma_target = _weighted_chroma_corr(out, tgt, frames)
    figures["chroma_corr_target"] = chroma_target
    figures["chroma_corr_input"] = _weighted_chroma_corr(out, inp, frames)
    output_motion, _ = _harmony_motion(out, frames)
    target_motion, target_moves = _harmony_motion(tgt, frames)
    motion_corr = _flat_corr(output_motion, target_motion)
    figures["harmony_motion_corr"], figures["harmony_motion_target"] = motion_corr, target_moves
    if chroma_target is not None:
        pitch_classes = float(np.clip(chroma_target, 0.0, 1.0))
        if target_moves < STATIC_HARMONY_LIMIT:
            figures["chroma_harmony"] = pitch_classes
        else:
            figures["chroma_harmony"] = min(float(np.clip(motion_corr or 0.0, 0.0, 1.0)), pitch_classes)

    figures.update(note_figures(
        sources.notes, out.transcription, power=out.power[:, :frames],
        sample_rate=ANALYSIS_SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH,
    ))
    figures["rhythm"] = figures["note_onset_f1_above_chance"]
    figures["harmony"] = figures["pitch_class_f1"]
    figures["clarity"] = figures["note_clarity"]

    envelope = _spectral_envelope(out.mel_power[:, :frames])
    distance_input = float(np.linalg.norm(envelope - _spectral_envelope(inp.mel_power[:, :frames])))
    distance_target = float(np.linalg.norm(envelope - _spectral_envelope(tgt.mel_power[:, :frames])))
    figures["timbre_distance_input"], figures["timbre_distance_target"] = distance_input, distance_target
    if distance_input + distance_target > 0:
        figures["timbre"] = distance_input / (distance_input + distance_target)

    figures["newness"] = _newness(
        out.mel_magnitude[:, :frames], inp.mel_magnitude[:, :frames], tgt.mel_magnitude[:, :frames]
    )

    variations = [_variation(clip.frame_rms[:frames]) for clip in (out, inp, tgt)]
    figures["rms_variation_output"], figures["rms_variation_input"], figures["rms_variation_target"] = variations
    figures["movement"] = _movement(*variations)

    figures.update(_note_003_figures(out.audio[:length], inp.audio[:length], tgt.audio[:length]))
    return ArrangementScore(arrangement_score(figures), figures)


def score_outputs(
    input: np.ndarray, target: np.ndarray, outputs: Mapping[str, np.ndarray], sample_rate: int
) -> dict[str, ArrangementScore]:
    """Score several outputs of one pair (all at ``sample_rate``), analysing the sources once."""
    sources = analyse_sources(input, target, sample_rate)
    return {name: score_output(sources, output, sample_rate) for name, output in outputs.items()}
