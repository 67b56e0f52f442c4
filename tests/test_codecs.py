"""models/codecs.py: frame counts, shapes, ids, and the real EnCodec weight loading."""

from __future__ import annotations

import math

import pytest
import torch

from jingle.models.codecs import CodecUnavailable, MelCodec, MelCodecConfig, build_codec, encodec_hub_path


@pytest.fixture(scope="module")
def mel():
    return build_codec("mel")


def test_mel_frames_match_encodec_frame_rate(mel):
    assert (mel.sample_rate, mel.frame_rate, mel.dim) == (24_000, 75.0, 128)
    assert mel.frames_for_seconds(16) == 1200
    for samples in (24_000, 24_001, 24_319, 24_320, 7):
        latents = mel.encode(torch.randn(2, 1, samples))
        assert latents.shape == (2, 128, math.ceil(samples / 320))


def test_mel_decode_gives_audio_of_the_frames_length(mel):
    latents = mel.encode(torch.randn(1, 1, 24_000))  # [1, 128, 75]
    audio = mel.decode(latents)
    assert audio.shape == (1, 1, 75 * 320)
    assert torch.isfinite(audio).all()


def test_mel_roundtrip_keeps_the_spectral_envelope(mel):
    t = torch.arange(24_000) / 24_000
    wav = (0.5 * torch.sin(2 * torch.pi * 440 * t))[None, None]
    again = mel.encode(mel.decode(mel.encode(wav)))
    original = mel.encode(wav)
    # Griffin-Lim loses the phase, not where the energy is
    assert original.mean(-1).argmax() == again.mean(-1).argmax()


def test_codec_ids_name_the_configuration(mel):
    assert mel.id.startswith("mel-v1-")
    assert mel.id == build_codec("mel").id
    assert MelCodec(MelCodecConfig(n_mels=64)).id != mel.id


def test_encode_checks_its_input(mel):
    with pytest.raises(ValueError, match=r"\[B, 1, S\]"):
        mel.encode(torch.randn(2, 24_000))


def test_unknown_codec_is_refused():
    with pytest.raises(ValueError, match="unknown codec 'mp3'"):
        build_codec("mp3")


class TestEncodec:
    def test_loads_a_checkpoint_file_and_encodes(self, encodec_checkpoint):
        codec = build_codec("encodec_24khz", checkpoint=encodec_checkpoint)
        assert (codec.sample_rate, codec.frame_rate, codec.dim) == (24_000, 75.0, 128)
        with torch.inference_mode():
            latents = codec.encode(torch.randn(2, 1, 24_000))
            audio = codec.decode(latents)
        assert latents.shape == (2, 128, 75)
        assert audio.shape == (2, 1, 24_000)
        assert codec.id.startswith("encodec_24khz-v0.1.1-")

    def test_weights_are_frozen(self, encodec_checkpoint):
        codec = build_codec("encodec_24khz", checkpoint=encodec_checkpoint)
        assert not any(p.requires_grad for p in codec.parameters())

    def test_decode_passes_gradients(self, encodec_checkpoint):
        codec = build_codec("encodec_24khz", checkpoint=encodec_checkpoint)
        latents = torch.randn(1, 128, 10, requires_grad=True)
        codec.decode(latents).pow(2).mean().backward()
        assert latents.grad is not None and latents.grad.abs().sum() > 0

    def test_the_hub_cache_is_used_when_no_checkpoint_is_given(self, encodec_checkpoint):
        cached = encodec_hub_path("encodec_24khz")
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(encodec_checkpoint.read_bytes())
        try:
            assert build_codec("encodec_24khz").id == build_codec("encodec_24khz", checkpoint=encodec_checkpoint).id
        finally:
            cached.unlink()

    def test_missing_weights_say_which_file_to_put_where(self):
        with pytest.raises(CodecUnavailable) as caught:
            build_codec("encodec_24khz")
        message = str(caught.value)
        assert "\n" not in message
        assert "encodec_24khz-d7cc33bc.th" in message and str(encodec_hub_path("encodec_24khz")) in message
        assert "--codec-checkpoint" in message

    def test_a_failed_download_gives_the_same_advice(self, monkeypatch):
        monkeypatch.delenv("JINGLE_OFFLINE")
        monkeypatch.setattr("jingle.models.codecs._ENCODEC_ROOT_URL", "http://127.0.0.1:9/")
        with pytest.raises(CodecUnavailable, match="download failed.*put it at"):
            build_codec("encodec_24khz")

    def test_a_missing_checkpoint_path_is_named(self, tmp_path):
        with pytest.raises(CodecUnavailable, match="does not exist"):
            build_codec("encodec_24khz", checkpoint=tmp_path / "nope.th")

    def test_a_corrupt_or_foreign_checkpoint_is_refused(self, tmp_path):
        corrupt = tmp_path / "corrupt.th"
        corrupt.write_bytes(b"not a torch file")
        with pytest.raises(CodecUnavailable, match="not a readable encodec_24khz checkpoint"):
            build_codec("encodec_24khz", checkpoint=corrupt)
        foreign = tmp_path / "foreign.th"
        torch.save({"layer.weight": torch.zeros(3)}, foreign)
        with pytest.raises(CodecUnavailable, match="not an encodec_24khz checkpoint"):
            build_codec("encodec_24khz", checkpoint=foreign)

    def test_different_weights_give_different_ids(self, encodec_checkpoint, tmp_path):
        state = torch.load(encodec_checkpoint, weights_only=True)
        state = {key: value + 1e-3 if value.is_floating_point() else value for key, value in state.items()}
        other = tmp_path / "other.th"
        torch.save(state, other)
        assert build_codec("encodec_24khz", checkpoint=other).id != build_codec("encodec_24khz", checkpoint=encodec_checkpoint).id

    def test_48khz_model_takes_mono(self):
        from encodec import EncodecModel

        codec = build_codec("encodec_48khz", state=EncodecModel.encodec_model_48khz(pretrained=False).state_dict())
        with torch.inference_mode():
            latents = codec.encode(torch.randn(1, 1, 48_000))
        assert latents.shape == (1, 128, 150) and codec.frame_rate == 150.0
