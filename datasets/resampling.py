"""Resampling to a codec's rate with torchaudio's windowed sinc, whole (``resample``) or as
a signal arrives in blocks (``StreamingResampler``: the same samples, bit for bit), so that
``datasets/audio.py`` can read a recording of any length without holding it whole.

Shape letters: S samples.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torchaudio


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """[S] float32 at ``from_rate`` -> [S'] float32 at ``to_rate``."""
    if from_rate == to_rate:
        return audio
    resampler = _resampler(from_rate, to_rate)
    with torch.inference_mode():
        out = resampler(torch.from_numpy(audio))
    return out.numpy().astype(np.float32, copy=False)


def resampled_length(num_samples: int, from_rate: int, to_rate: int) -> int:
    """How many samples ``resample`` returns for ``num_samples`` input samples."""
    if from_rate == to_rate:
        return num_samples
    gcd = math.gcd(from_rate, to_rate)
    # torchaudio's own expression, float32 rounding included (it can differ from the exact
    # ceiling for signals of over 2**24 samples)
    return int(torch.ceil(torch.as_tensor(to_rate // gcd * num_samples / (from_rate // gcd))).long())


# A CPU conv1d runs in oneDNN when its input holds more than 20480 samples, and in torch's
# own kernel otherwise; the two round differently in the last bit. ``StreamingResampler``
# gives every convolution more input than that (or, for a signal too short for it, the
# whole signal, as ``resample`` does), so that it gives ``resample``'s samples bit for bit
# and preprocessing's window hashes do not depend on how a file was read.
_ONEDNN_MIN_INPUT = 20_481
# Input of one streaming convolution (3 s at 44.1 kHz). Every call has the same length:
# oneDNN builds (and caches) a kernel per input length, and a new length cost 1.3 ms of CPU
# on top of the 0.6 ms the convolution itself took (one thread, 2-core machine).
_CONVOLVE_INPUT = 1 << 17


class StreamingResampler:
    """``resample`` for a signal that arrives in blocks: the same samples, in pieces.

    torchaudio's resampler is a strided convolution: every ``stride`` input samples
    (from_rate / gcd) make one *position* of ``phases`` output samples (to_rate / gcd),
    each from the ``span`` input samples starting ``width`` before the position, the
    signal zero-padded by ``width`` before and ``width + stride`` after. Input is gathered
    until a convolution of ``positions_per_call`` positions has all of its input; what
    follows the last position computed is carried to the next call, so that every
    position is computed once, from the same samples, however the blocks fall.

    Usage: ``push`` every block in order, then ``finish`` once; join what they return.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        if from_rate <= 0 or to_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
        self.from_rate, self.to_rate = from_rate, to_rate
        self._received = self._emitted = 0
        if from_rate == to_rate:
            return
        transform = _resampler(from_rate, to_rate)
        gcd = math.gcd(from_rate, to_rate)
        self._stride, self._phases = from_rate // gcd, to_rate // gcd
        self._kernel = transform.kernel  # [phases, 1, span]
        self._width = transform.width
        span = self._kernel.shape[-1]
        self._positions_per_call = -(-_CONVOLVE_INPUT // self._stride)
        self._call_input = (self._positions_per_call - 1) * self._stride + span  # at least _CONVOLVE_INPUT
        # input not yet convolved, from the next position's first sample (the zero padding at
        # first), in the blocks it came in: they are joined when a call's worth has come
        self._pending = [np.zeros(self._width, dtype=np.float32)]
        self._pending_length = self._width
        self._convolved = False

    def push(self, block: np.ndarray) -> np.ndarray:
        """[S_in] float32 -> the [S_out] samples it completes (may be none)."""
        self._received += len(block)
        if self.from_rate == self.to_rate:
            self._emitted += len(block)
            return block
        self._pending.append(np.asarray(block, dtype=np.float32))
        self._pending_length += len(block)
        if self._pending_length < self._call_input:
            return np.zeros(0, dtype=np.float32)
        pending = np.concatenate(self._pending)
        calls = (len(pending) - self._call_input) // self._step + 1
        out = self._convolve_calls(pending, calls)
        self._pending = [pending[calls * self._step :]]
        self._pending_length = len(pending) - calls * self._step
        self._emitted += len(out)
        return out

    def finish(self) -> np.ndarray:
        """The last samples: the signal's end, zero-padded, cut to ``resample``'s length."""
        total = resampled_length(self._received, self.from_rate, self.to_rate)
        if self.from_rate == self.to_rate:
            return np.zeros(0, dtype=np.float32)
        tail = np.concatenate([*self._pending, np.zeros(self._width + self._stride, dtype=np.float32)])
        self._pending, self._pending_length = [], 0
        if not self._convolved and len(tail) < _ONEDNN_MIN_INPUT:
            out = self._convolve(tail)  # a short signal whole, as ``resample`` convolves it
        else:
            # Zeros after the padding make whole calls (the same input length as every
            # other); the positions they add lie past the end and are cut off below.
            calls = max(1, -(-(len(tail) - self._call_input) // self._step) + 1)
            tail = np.pad(tail, (0, (calls - 1) * self._step + self._call_input - len(tail)))
            out = self._convolve_calls(tail, calls)
        out = out[: max(0, total - self._emitted)]
        self._emitted += len(out)
        return out

    @property
    def _step(self) -> int:
        """Input samples between the starts of two calls."""
        return self._positions_per_call * self._stride

    def _convolve_calls(self, signal: np.ndarray, calls: int) -> np.ndarray:
        """``calls`` convolutions of ``_call_input`` samples, ``_step`` apart, from the start of ``signal``."""
        out = [self._convolve(signal[call * self._step : call * self._step + self._call_input]) for call in range(calls)]
        self._convolved = True
        return np.concatenate(out)

    def _convolve(self, signal: np.ndarray) -> np.ndarray:
        """[L] input from a position's first sample -> [n * phases] output of its n whole
        positions; the input past the last whole position is left alone, as in ``resample``."""
        with torch.inference_mode():
            out = torch.nn.functional.conv1d(torch.from_numpy(signal)[None, None], self._kernel, stride=self._stride)
        # [1, phases, n] -> [n * phases]: position-major, as torchaudio orders it
        return out[0].T.reshape(-1).numpy()


@lru_cache(maxsize=16)
def _resampler(from_rate: int, to_rate: int) -> torchaudio.transforms.Resample:
    # The transform caches its sinc kernel, which a per-call functional resample rebuilds.
    return torchaudio.transforms.Resample(from_rate, to_rate)
