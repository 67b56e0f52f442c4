"""datasets/audio.py: every WAV flavour libsndfile reads, the checks it misses, segmenting."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from jingle.datasets.audio import (
    READ_BLOCK_FRAMES,
    TAIL_POLICIES,
    AudioError,
    Segmenting,
    check_mono,
    cut,
    cut_stream,
    limit_peak,
    probe,
    read_mono,
    stream_mono,
)
from jingle.datasets.resampling import StreamingResampler, resample, resampled_length
from tests.conftest import tone, write

SUBTYPES = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]


@pytest.mark.parametrize("subtype", SUBTYPES)
def test_reads_every_sample_format(tmp_path, subtype):
    path = write(tmp_path / "a.wav", tone(1.0, 24_000), 24_000, subtype)
    audio = read_mono(path, 24_000)
    assert audio.dtype == np.float32 and audio.shape == (24_000,)
    tolerance = 0.02 if subtype == "PCM_U8" else 1e-3
    np.testing.assert_allclose(audio, tone(1.0, 24_000), atol=tolerance)


@pytest.mark.parametrize("sample_rate", [8_000, 16_000, 22_050, 44_100, 48_000, 96_000])
def test_resamples_to_the_codec_rate(tmp_path, sample_rate):
    path = write(tmp_path / "a.wav", tone(2.0, sample_rate, frequency=440.0), sample_rate)
    audio = read_mono(path, 24_000)
    assert abs(len(audio) - 48_000) <= 1
    # the tone survives resampling: its spectrum peaks at 440 Hz
    spectrum = np.abs(np.fft.rfft(audio[: 24_000]))
    assert abs(np.argmax(spectrum) - 440) <= 1


@pytest.mark.parametrize("channels", [2, 6])
def test_downmixes_to_mono(tmp_path, channels):
    stereo = np.stack([np.full(2400, 0.5 * c / channels, dtype=np.float32) for c in range(channels)], axis=1)
    path = write(tmp_path / "a.wav", stereo, 24_000, "FLOAT")
    audio = read_mono(path, 24_000)
    np.testing.assert_allclose(audio, stereo.mean(axis=1), atol=1e-6)


def test_probe_reads_the_header_only(tmp_path):
    path = write(tmp_path / "a.wav", tone(1.5, 44_100, channels=2), 44_100, "PCM_24")
    info = probe(path)
    assert (info.sample_rate, info.channels, info.frames, info.subtype) == (44_100, 2, 66_150, "PCM_24")
    assert info.seconds == pytest.approx(1.5)


def test_truncated_wav_is_caught_from_its_header(tmp_path):
    path = write(tmp_path / "a.wav", tone(1.0, 24_000), 24_000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 10_000])
    # libsndfile itself opens it and just reports fewer frames
    assert soundfile.info(str(path)).frames < 24_000
    with pytest.raises(AudioError, match="truncated: header declares 48000 bytes"):
        probe(path)


def test_fewer_frames_read_than_the_header_says_is_truncation(tmp_path):
    path = write(tmp_path / "a.wav", tone(1.0, 24_000), 24_000)
    info = probe(path)
    longer = type(info)(**{**info.__dict__, "frames": info.frames + 500})
    with pytest.raises(AudioError, match="truncated: header says 24500 frames, read 24000"):
        read_mono(path, 24_000, info=longer)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "empty file"),
        (b"this is not audio, just text\n" * 20, "not a readable audio file"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x99\x99" + b"\x00" * 40, "not a readable audio file"),
    ],
    ids=["zero-length", "text", "corrupt-header"],
)
def test_unreadable_files_are_refused_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=reason):
        probe(path)


def test_missing_directory_and_dangling_link(tmp_path):
    with pytest.raises(AudioError, match="does not exist"):
        probe(tmp_path / "nowhere.wav")
    (tmp_path / "folder.wav").mkdir()
    with pytest.raises(AudioError, match="is a directory"):
        probe(tmp_path / "folder.wav")
    (tmp_path / "link.wav").symlink_to(tmp_path / "gone.wav")
    with pytest.raises(AudioError, match="does not exist"):
        probe(tmp_path / "link.wav")


@pytest.mark.parametrize("value, reason", [(np.nan, "NaN/Inf"), (np.inf, "NaN/Inf"), (0.0, "silent")])
def test_nan_inf_and_silence_are_refused_on_read(tmp_path, value, reason):
    audio = np.zeros(24_000, dtype=np.float32) if value == 0.0 else tone(1.0, 24_000)
    audio[100] = value
    path = write(tmp_path / "a.wav", audio, 24_000, "FLOAT")
    with pytest.raises(AudioError, match=reason):
        read_mono(path, 24_000)


def test_resample_identity_and_length():
    audio = tone(1.0, 44_100)
    assert resample(audio, 44_100, 44_100) is audio
    assert len(resample(audio, 44_100, 24_000)) == 24_000


class TestLimitPeak:
    def test_a_loud_signal_is_scaled_to_the_ceiling_by_one_gain(self):
        loud = 3.8 * tone(1.0, 24_000)
        loud[1000] = -3.8  # the peak is the largest |sample|, here a negative one
        original = loud.copy()
        limited, gain, peak = limit_peak(loud)
        assert peak == pytest.approx(3.8) and gain == pytest.approx(0.99 / 3.8)
        assert limited.dtype == np.float32 and np.abs(limited).max() == pytest.approx(0.99) and np.abs(limited).max() <= 0.99
        np.testing.assert_allclose(limited, original * gain, rtol=1e-6)  # scaled, not clipped
        assert np.array_equal(loud, original)  # the caller's array is left alone
        again = limit_peak(limited)  # limiting twice changes nothing the second time
        assert again.gain == 1.0 and again.audio is limited

    def test_negative_peaks_count(self):
        audio = np.array([0.5, -2.0, 0.25], dtype=np.float32)
        limited, gain, peak = limit_peak(audio, ceiling=0.5)
        assert peak == 2.0 and gain == 0.25
        np.testing.assert_allclose(limited, [0.125, -0.5, 0.0625])

    def test_one_gain_for_every_channel(self):
        stereo = np.stack([2.0 * tone(0.1, 24_000), 0.5 * tone(0.1, 24_000)], axis=1)  # [S, 2]
        limited, gain, _ = limit_peak(stereo)
        assert gain == pytest.approx(0.99 / 1.0)  # tone() peaks at 0.5, so channel 0 at 1.0
        np.testing.assert_allclose(limited, stereo * gain, rtol=1e-6)  # the quiet channel is scaled too

    @pytest.mark.parametrize("peak", [0.0, 0.5, 0.99])
    def test_audio_at_or_under_the_ceiling_and_silence_are_left_alone(self, peak):
        audio = np.zeros(100, dtype=np.float32)
        audio[10] = peak
        limited, gain, measured = limit_peak(audio)
        assert limited is audio and gain == 1.0 and measured == pytest.approx(peak)
        assert limit_peak(np.zeros(0, dtype=np.float32)).gain == 1.0

    def test_full_scale_ceiling_is_never_passed_by_rounding(self):
        audio = np.random.default_rng(0).uniform(-7.3, 7.3, 10_000).astype(np.float32)
        assert np.abs(limit_peak(audio, ceiling=1.0).audio).max() <= 1.0

    @pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
    def test_non_finite_samples_are_an_error(self, value):
        audio = tone(0.01, 24_000)  # 240 samples
        audio[[3, 7]] = value
        with pytest.raises(AudioError, match="2 of 240 samples are NaN or infinite"):
            limit_peak(audio)

    @pytest.mark.parametrize("ceiling", [0, -0.5, 1.5, True, "0.9"])
    def test_a_ceiling_outside_full_scale_is_refused(self, ceiling):
        with pytest.raises(ValueError, match="ceiling must be in"):
            limit_peak(tone(0.01, 24_000), ceiling=ceiling)


class TestSegmenting:
    def test_drop_keeps_full_windows_only(self):
        assert Segmenting(segment_seconds=2).bounds(5 * 100, 100) == [(0, 200), (200, 400)]

    def test_hop_overlaps_windows(self):
        bounds = Segmenting(segment_seconds=2, hop_seconds=1).bounds(5 * 100, 100)
        assert bounds == [(0, 200), (100, 300), (200, 400), (300, 500)]

    def test_pad_keeps_a_long_enough_tail(self):
        assert Segmenting(segment_seconds=2, tail="pad").bounds(5 * 100, 100)[-1] == (400, 600)
        # a 0.5 s tail is shorter than the default minimum (half a segment)
        assert Segmenting(segment_seconds=2, tail="pad").bounds(450, 100) == [(0, 200), (200, 400)]
        assert Segmenting(segment_seconds=2, tail="pad", min_tail_seconds=0.5).bounds(450, 100)[-1] == (400, 600)

    def test_shorter_than_one_segment_yields_nothing_when_dropping(self):
        assert Segmenting(segment_seconds=16).bounds(15 * 24_000, 24_000) == []
        assert Segmenting(segment_seconds=16).min_seconds() == 16
        assert Segmenting(segment_seconds=16, tail="pad").min_seconds() == 8

    def test_cut_zero_pads_past_the_end(self):
        audio = np.arange(1, 451, dtype=np.float32)
        windows = cut(audio, Segmenting(segment_seconds=2, tail="pad", min_tail_seconds=0.5).bounds(450, 100))
        assert windows.shape == (3, 200)
        assert windows[2, 49] == 450 and not windows[2, 50:].any()

    @pytest.mark.parametrize(
        "kwargs",
        [{"segment_seconds": 0}, {"hop_seconds": -1}, {"tail": "keep"}, {"segment_seconds": 2, "min_tail_seconds": 3}],
    )
    def test_bad_settings_are_refused(self, kwargs):
        with pytest.raises(ValueError):
            Segmenting(**kwargs)


def test_splice_crossfades_only_at_jumps_and_keeps_channels():
    from jingle.datasets.audio import splice

    audio = np.stack([np.arange(100, dtype=np.float32), -np.arange(100, dtype=np.float32)], axis=1)  # [S, 2]
    out = splice(audio, [(0, 10), (10, 20), (50, 60)], crossfade=4)
    assert out.shape == (30, 2)
    assert np.array_equal(out[:20], audio[:20])  # a contiguous join is no join
    ramp = (np.arange(4) + 0.5) / 4 * (np.pi / 2)
    expected = np.sin(ramp) * audio[50:54, 0] + np.cos(ramp) * audio[20:24, 0]  # fade in over the continuation
    assert np.allclose(out[20:24, 0], expected) and np.array_equal(out[24:], audio[54:60])
    with pytest.raises(ValueError, match="not inside"):
        splice(audio, [(90, 120)], crossfade=4)


# ------------------------------------------------------------------ streaming reads
#
# The contract is that streaming gives the whole-file path's samples to 1e-5; the tests
# ask for bit equality, which the resampler also gives (see ``datasets/resampling.py``), because
# preprocessing hashes the windows (``audio_sha256``) and a changed bit would change them.


def whole_file_read(path, sample_rate: int) -> np.ndarray:
    """The path preprocessing took before streaming: the whole file, channels averaged,
    then torchaudio's resample of the whole signal."""
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [S, C]
    return resample(audio.mean(axis=1), rate, sample_rate)


def noise(seconds: float, sample_rate: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.3 * rng.standard_normal((round(seconds * sample_rate), channels))).astype(np.float32)  # [S, C]


@pytest.mark.parametrize("file_rate", [44_100, 48_000, 22_050, 24_000])
@pytest.mark.parametrize("block_frames", [100, 4_096, READ_BLOCK_FRAMES])
def test_streaming_equals_the_whole_file_read_and_resample(tmp_path, file_rate, block_frames):
    path = write(tmp_path / "a.wav", noise(7.3, file_rate, channels=2), file_rate)  # several convolutions at every rate
    expected = whole_file_read(path, 24_000)
    blocks = list(stream_mono(path, 24_000, block_frames=block_frames))
    streamed = np.concatenate(blocks)
    assert all(block.dtype == np.float32 and len(block) for block in blocks)
    assert len(blocks) > 1 or block_frames == READ_BLOCK_FRAMES
    assert streamed.shape == expected.shape
    assert np.abs(streamed - expected).max() <= 1e-5  # the contract
    assert np.array_equal(streamed, expected)  # and in fact bit for bit
    assert np.array_equal(read_mono(path, 24_000), expected)


@pytest.mark.parametrize("channels", [3, 6])
def test_streaming_averages_every_channel(tmp_path, channels):
    path = write(tmp_path / "a.wav", noise(2.1, 44_100, channels, seed=channels), 44_100, "PCM_24")
    streamed = np.concatenate(list(stream_mono(path, 24_000, block_frames=1_000)))
    assert np.array_equal(streamed, whole_file_read(path, 24_000))


@pytest.mark.parametrize("file_rate", [44_100, 48_000, 22_050])
@pytest.mark.parametrize("block_frames", [20, 150])
def test_blocks_smaller_than_the_resampler_kernel(tmp_path, file_rate, block_frames):
    # to 24 kHz, 44.1 kHz convolves 171 input samples per 147, 22.05 kHz 161 per 147, 48 kHz
    # 28 per 2; 6.5 s is two convolutions or more at every rate
    path = write(tmp_path / "a.wav", noise(6.5, file_rate, channels=2, seed=1), file_rate)
    streamed = np.concatenate(list(stream_mono(path, 24_000, block_frames=block_frames)))
    assert np.array_equal(streamed, whole_file_read(path, 24_000))


@pytest.mark.parametrize("length", [1, 5, 147, 20_000, 20_600, 33_333, 250_000])
def test_resampler_pushed_in_any_blocks_equals_resample(length):
    rng = np.random.default_rng(length)
    signal = (0.3 * rng.standard_normal(length)).astype(np.float32)
    for from_rate, to_rate in [(44_100, 24_000), (48_000, 24_000), (22_050, 24_000), (24_000, 16_000), (24_000, 24_000)]:
        resampler = StreamingResampler(from_rate, to_rate)
        cuts = np.sort(rng.integers(0, length + 1, size=6))  # uneven blocks, some empty
        pieces = [resampler.push(part) for part in np.split(signal, cuts)] + [resampler.finish()]
        assert np.array_equal(np.concatenate(pieces), resample(signal, from_rate, to_rate)), (from_rate, to_rate)
        assert len(np.concatenate(pieces)) == resampled_length(length, from_rate, to_rate)


def test_a_truncated_file_still_raises_when_streamed(tmp_path):
    path = write(tmp_path / "a.wav", tone(1.0, 44_100), 44_100)
    info = probe(path)
    longer = type(info)(**{**info.__dict__, "frames": info.frames + 500})
    with pytest.raises(AudioError, match="truncated: header says 44600 frames, read 44100"):
        for _ in stream_mono(path, 24_000, info=longer, block_frames=4_096):
            pass
    with pytest.raises(AudioError, match="truncated: header says 44600 frames, read 44100"):
        check_mono(path, info=longer, block_frames=4_096)
    cut_short = path.with_name("cut.wav")
    cut_short.write_bytes(path.read_bytes()[:-10_000])
    with pytest.raises(AudioError, match="truncated: header declares"):
        next(stream_mono(cut_short, 24_000))


@pytest.mark.parametrize("value, reason", [(np.nan, "contains 2 NaN/Inf samples"), (0.0, "silent: every sample is zero")])
def test_faults_known_only_at_the_end_raise_after_the_last_block(tmp_path, value, reason):
    audio = np.zeros(48_000, dtype=np.float32) if value == 0.0 else tone(2.0, 24_000)
    audio[[100, 47_000]] = value
    path = write(tmp_path / "a.wav", audio, 24_000, "FLOAT")
    blocks = []
    with pytest.raises(AudioError, match=reason):
        for block in stream_mono(path, 24_000, block_frames=10_000):
            blocks.append(block)
    assert sum(len(block) for block in blocks) == 48_000  # every block came first: commit nothing before the end
    with pytest.raises(AudioError, match=reason):
        check_mono(path, block_frames=10_000)
    with pytest.raises(AudioError, match=reason):
        read_mono(path, 24_000)


def test_cut_stream_gives_cut_s_windows():
    rng = np.random.default_rng(5)
    for _ in range(200):
        length = int(rng.integers(1, 3_000))
        audio = rng.standard_normal(length).astype(np.float32)
        segmenting = Segmenting(
            segment_seconds=float(rng.integers(1, 12)), hop_seconds=float(rng.integers(1, 20)), tail=str(rng.choice(TAIL_POLICIES))
        )
        # the pair's length may be shorter than this side's audio; some windows skipped
        bounds = [span for span in segmenting.bounds(int(rng.integers(1, length + 1)), 100) if rng.random() < 0.8]
        block = int(rng.integers(1, 700))
        windows = list(cut_stream((audio[start : start + block] for start in range(0, length, block)), bounds))
        expected = cut(audio, bounds)
        assert len(windows) == len(expected) and all(np.array_equal(w, e) for w, e in zip(windows, expected))
    with pytest.raises(ValueError, match="in order"):
        list(cut_stream([audio], [(10, 20), (0, 10)]))
