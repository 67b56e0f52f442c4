"""The shortcuts a fusion loss can settle on, scored beside every output.

An output is only worth something if it beats what needs no model at all: copies and
mixes of the sources, noise, and the two regressions real training runs have written. Each
shortcut is built from the pair's own audio, so every report shows at a glance whether an
output beats doing nothing clever (``evaluation/pair_score.py`` scores them).

Shape letters: S samples, F STFT bins, T frames.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage

SHORTCUTS = (
    "copy_input", "copy_target", "plain_mix", "stationary", "modulated_target", "rhythmic_noise",
    "smeared_target_pulse",
)  # fmt: skip
# made only where the pair's reference arrangement is known (generated pairs, --arrangements)
REFERENCE_SHORTCUTS = ("smeared_arrangement",)
ALL_SHORTCUTS = (*SHORTCUTS, *REFERENCE_SHORTCUTS)

SMEAR_SECONDS = 0.3  # a note's attack spread over a beat's third at 120 bpm: no onset survives
SMEAR_N_FFT = 2048
SMEAR_GRIFFIN_LIM_ITERATIONS = 32  # as the mel codec's decoder


def shortcut_outputs(input: np.ndarray, target: np.ndarray, sample_rate: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Every shortcut of ``SHORTCUTS``, [S] float32 each at ``sample_rate``:

    - ``copy_input``, ``copy_target``: the sources themselves;
    - ``plain_mix``: input + target, each scaled to the mean of the two RMS levels;
    - ``stationary``: Gaussian noise shaped to the mix's average power spectrum (Welch,
      ``SMEAR_N_FFT``-sample Hann frames), same length and RMS as the mix;
    - ``modulated_target``: the target under the input's loudness (its frame RMS, ~10 ms,
      peak 1): "the input's loudness x the target's music", the smart mixing note 004
      rejects, and the exact minimum of the reconstruction loss (training/losses.py);
    - ``rhythmic_noise``: noise with the target's average spectrum under the input's
      loudness: the input's rhythm and the target's timbre with no harmony at all. A
      model trained with the notes' losses wrote nearly this (bench/fusion_quality.py);
    - ``smeared_target_pulse``: the target smeared in time (``smeared``) under the input's
      loudness, plus noise bursts (white noise under the same loudness) at the same RMS:
      the target's harmony pulsing on the input's hits with no clear note, which is what
      the demo-size model wrote after 60 epochs (issue 17's spectrograms).

    All are cut to the length the sources share.
    """
    input = np.asarray(input, dtype=np.float32)
    target = np.asarray(target, dtype=np.float32)
    if input.ndim != 1 or target.ndim != 1:
        raise ValueError(f"expected mono [S] input and target, got shapes {input.shape}, {target.shape}")
    length = min(len(input), len(target))
    if length == 0:
        raise ValueError("input and target must hold samples")
    input, target = input[:length], target[:length]
    rms_input, rms_target = _rms(input), _rms(target)
    level = (rms_input + rms_target) / 2
    input_gain = level / rms_input if rms_input > 0 else 0.0
    target_gain = level / rms_target if rms_target > 0 else 0.0
    mix = input * input_gain + target * target_gain  # [S]
    loudness = _loudness(input, sample_rate)  # [S]
    rng = np.random.default_rng(seed)
    pulse = smeared(target, sample_rate, seed=seed) * loudness  # [S]
    # its own stream: the other shortcuts' noise stays what it was before this one existed
    bursts = np.random.default_rng([seed, 1]).standard_normal(length).astype(np.float32) * loudness  # [S]
    return {
        "copy_input": input.copy(),
        "copy_target": target.copy(),
        "plain_mix": mix.astype(np.float32),
        "stationary": _stationary_like(mix, rng),
        "modulated_target": (target * loudness).astype(np.float32),
        "rhythmic_noise": (_stationary_like(target, rng) * loudness).astype(np.float32),
        "smeared_target_pulse": (_unit_rms(pulse) + _unit_rms(bursts)).astype(np.float32) * rms_target,
    }


def reference_shortcuts(arrangement: np.ndarray, sample_rate: int, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Shortcuts made from a pair's reference arrangement: ``smeared_arrangement``, the
    arrangement's notes smeared in time over ``SMEAR_SECONDS`` (right pitches, right
    rhythm at the scale of a beat, no note onsets). [S] float32 at ``sample_rate``."""
    return {"smeared_arrangement": smeared(np.asarray(arrangement, dtype=np.float32), sample_rate, seed=seed)}


def smeared(audio: np.ndarray, sample_rate: int, *, seconds: float = SMEAR_SECONDS, seed: int = 0) -> np.ndarray:
    """``audio`` smeared in time: its STFT magnitude box-blurred over ``seconds``, the phase
    made anew by Griffin-Lim (seeded), as a decoder would write blurred frames. [S]"""
    import librosa

    audio = np.asarray(audio, dtype=np.float32)
    n_fft = min(SMEAR_N_FFT, max(16, len(audio)))
    hop = n_fft // 4
    magnitude = np.abs(librosa.stft(audio, n_fft=n_fft, hop_length=hop))  # [F, T]
    width = max(1, round(seconds * sample_rate / hop))
    magnitude = scipy.ndimage.uniform_filter1d(magnitude, width, axis=1, mode="nearest")  # [F, T]
    rebuilt = librosa.griffinlim(
        magnitude, n_iter=SMEAR_GRIFFIN_LIM_ITERATIONS, hop_length=hop, n_fft=n_fft, length=len(audio),
        random_state=np.random.default_rng(seed),
    )
    return rebuilt.astype(np.float32)


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def _unit_rms(audio: np.ndarray) -> np.ndarray:
    rms = _rms(audio)
    return audio / rms if rms > 0 else audio


def _loudness(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``audio``'s frame RMS over ~10 ms frames, linearly interpolated to every sample and
    scaled to peak 1 (zeros for silence). [S]"""
    import librosa

    hop = max(1, sample_rate // 100)
    frames = librosa.feature.rms(y=audio.astype(np.float32), frame_length=2 * hop, hop_length=hop, center=True)[0]  # [T]
    envelope = np.interp(np.arange(len(audio)), np.arange(len(frames)) * hop, frames)  # [S]
    peak = float(envelope.max()) if envelope.size else 0.0
    return envelope / peak if peak > 0 else np.zeros_like(envelope)


def _stationary_like(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise with ``audio``'s average power spectrum, length and RMS. [S]"""
    import librosa

    length = len(audio)
    frame = min(SMEAR_N_FFT, length)
    stft = librosa.stft(audio.astype(np.float32), n_fft=frame, hop_length=max(1, frame // 4))  # [F, T]
    average = (np.abs(stft) ** 2).mean(axis=1)  # [F]
    noise = np.fft.rfft(rng.standard_normal(length))  # [S // 2 + 1]
    shape = np.sqrt(np.interp(np.linspace(0, 1, len(noise)), np.linspace(0, 1, len(average)), average))
    stationary = np.fft.irfft(noise * shape, n=length)
    rms = _rms(stationary)
    return (stationary * (_rms(audio) / rms if rms > 0 else 0.0)).astype(np.float32)
