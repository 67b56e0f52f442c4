"""pipelines/fusion_inference.py: a fusion checkpoint back to a model, and a pair fused in
chunks; tiny mel-codec checkpoints, seconds of generated audio. (The files it writes are
checked through ``jingle fuse`` in test_fuse.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from jingle.datasets.audio import AudioError, read_mono
from jingle.models.cascade import CascadeConfig, FusionOutput, build_fusion_model
from jingle.training.checkpoints import CheckpointError, TrainingState, save_state, state_path
from jingle.models.codecs import build_codec
from jingle.training.fusion_config import FusionTrainConfig
from jingle.models.novelty import NoveltyTerms
from jingle.pipelines import fusion_inference
from tests.conftest import tone, write

# latent_dim must be the mel codec's 128 channels; everything else is as small as it goes.
# At the default novelty threshold (0.7) a fresh model's novelty loss is exactly 0 for every
# pair, so "best" could not be told from "first"; at -1 every pair has its own loss.
TINY_COMPOSITIONAL = {"component_dim": 8, "model_dim": 32, "heads": 4, "layers": 1,
                      "feedforward_dim": 64, "selector_hidden_dim": 16, "dropout": 0.0, "novelty_threshold": -1.0}
# 40-frame windows compressed up to 1.5x need 60 frames (0.8 s at 75 frames/s); a 1 s segment has 75
TINY_WINDOW = {"window_frames": 40, "max_ratio": 1.5, "selector_hidden_dims": [32, 16], "pooled_steps": 10}
SAMPLE_RATE = 24_000
HOP = 320


def save_checkpoint(directory: Path, agent: str) -> Path:
    torch.manual_seed(0)
    model_config = CascadeConfig(latent_dim=128, model_dim=32, heads=4, layers_per_stage=1, feedforward_dim=64, dropout=0.0,
                                 agent=agent, num_stages=1 if agent == "none" else 2,
                                 compositional=TINY_COMPOSITIONAL, adaptive_window=TINY_WINDOW)
    config = FusionTrainConfig(model=model_config)
    codec = build_codec("mel")
    model = build_fusion_model(model_config)
    state = TrainingState(kind="fusion", model=model.state_dict(), step=7, epoch=1, config=config.to_dict(),
                          codec=codec.describe(), data={"segment_seconds": 1.0})
    save_state(directory, state)
    return directory


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {agent: save_checkpoint(root / agent, agent) for agent in ("compositional", "adaptive_window", "none")}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    """A 2.5 s mono 24 kHz input and a 2.7 s stereo 44.1 kHz target (common length 2.5 s)."""
    root = tmp_path_factory.mktemp("pair")
    rng = np.random.default_rng(0)
    clicks = tone(2.5, SAMPLE_RATE, 110.0) * (np.arange(round(2.5 * SAMPLE_RATE)) % 6000 < 1500)
    input_path = write(root / "drums.wav", (clicks + 0.05 * rng.standard_normal(clicks.shape)).astype(np.float32), SAMPLE_RATE)
    target_path = write(root / "chords.wav", tone(2.7, 44_100, 330.0, channels=2), 44_100)
    return input_path, target_path


def test_output_is_the_concatenation_of_per_chunk_model_runs(checkpoints, pair):
    loaded = fusion_inference.load_fusion_checkpoint(checkpoints["compositional"])
    codec = loaded.codec
    audio = [read_mono(path, SAMPLE_RATE)[: round(2.5 * SAMPLE_RATE)] for path in pair]
    chunking = fusion_inference.plan_chunks(loaded.model.config, codec, len(audio[0]), loaded.segment_seconds)
    assert chunking.samples == SAMPLE_RATE and chunking.starts == [0, 24_000, 48_000]
    with torch.inference_mode():
        chunks = fusion_inference.run_chunks(loaded.model, codec, *audio, chunking, "best", "cpu")
        # the last chunk is 0.5 s of audio and 0.5 s of zeros
        tail = np.zeros((2, SAMPLE_RATE), dtype=np.float32)
        tail[:, :12_000] = [a[48_000:] for a in audio]
        latents = codec.encode(torch.from_numpy(tail)[:, None])
        expected = loaded.model(latents[:1], latents[1:]).outputs[0]
    assert [chunk.latent.shape[-1] for chunk in chunks] == [75, 75, 75]
    torch.testing.assert_close(chunks[2].latent, expected)



def resave(source: Path, destination: Path, change) -> Path:
    """A copy of a checkpoint with ``change(state dict)`` applied."""
    state = torch.load(state_path(source), weights_only=True)
    change(state)
    destination.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, destination)
    return destination


def test_a_checkpoint_stored_before_keys_moved_still_loads(checkpoints, tmp_path):
    def old_layout(state):
        model, losses = state["config"]["model"], state["config"]["losses"]
        latent_dim = model.pop("latent_dim")
        model["compositional"]["latent_dim"] = model["adaptive_window"]["latent_dim"] = latent_dim
        state["config"]["training"]["shuffle_targets"] = losses.pop("shuffle_targets")

    old = resave(checkpoints["compositional"], tmp_path / "old.pt", old_layout)
    with pytest.raises(ValueError, match="has moved to"):
        FusionTrainConfig.from_dict(torch.load(old, weights_only=True)["config"])
    loaded = fusion_inference.load_fusion_checkpoint(old)
    current = fusion_inference.load_fusion_checkpoint(checkpoints["compositional"])
    assert loaded.model.config == current.model.config and loaded.step == 7 and loaded.segment_seconds == 1.0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda state: state["config"]["model"].update(model_dim=48), "the weights do not fit its model config ("),
        (lambda state: state["config"]["model"].update(heads=5), "its stored config is not valid in this version (config section 'model':"),
        (lambda state: state["codec"].pop("name"), "does not name its codec"),
    ],
)
def test_a_checkpoint_that_does_not_rebuild_is_one_checkpoint_error_line(checkpoints, tmp_path, change, message):
    bad = resave(checkpoints["compositional"], tmp_path / "bad.pt", change)
    with pytest.raises(CheckpointError) as raised:
        fusion_inference.load_fusion_checkpoint(bad)
    assert message in str(raised.value) and len(str(raised.value).splitlines()) == 1, raised.value


def novelty_terms(loss: float, to_input: float, to_target: float) -> NoveltyTerms:
    return NoveltyTerms(loss=torch.tensor(loss), similarity_to_input=torch.tensor(to_input), similarity_to_target=torch.tensor(to_target))


def test_select_output_takes_the_lowest_novelty_loss_an_index_or_the_mean():
    ramp = torch.arange(10.0).reshape(1, 2, 5)  # [B, D, T]
    # pair 1 has the lowest loss, but neither the lowest latents nor the lowest similarities;
    # the mean latent (ramp + 4) is not the median one (ramp + 3)
    result = FusionOutput(
        outputs=[ramp + 1.0, ramp + 8.0, ramp + 3.0],
        input_references=[ramp] * 3,
        target_references=[ramp] * 3,
        novelty=[novelty_terms(0.5, 0.1, 0.7), novelty_terms(0.2, 0.9, 0.2), novelty_terms(0.8, 0.2, 0.0)],
    )

    latent, novelty, used = fusion_inference.select_output(result, "best")
    assert used == 1 and latent is result.outputs[1] and novelty is result.novelty[1]
    for index in (0, 2):
        latent, novelty, used = fusion_inference.select_output(result, index)
        assert used == index and latent is result.outputs[index] and novelty is result.novelty[index]

    latent, novelty, used = fusion_inference.select_output(result, "mean")
    assert used == "mean"
    torch.testing.assert_close(latent, ramp + 4.0)
    assert float(novelty.loss) == pytest.approx(0.5)
    assert float(novelty.similarity_to_input) == pytest.approx(0.4)
    assert float(novelty.similarity_to_target) == pytest.approx(0.3)


def test_each_chunk_keeps_the_pair_its_mode_names_and_records_every_pairs_novelty(checkpoints, pair):
    loaded = fusion_inference.load_fusion_checkpoint(checkpoints["adaptive_window"])
    codec = loaded.codec
    audio = [read_mono(path, SAMPLE_RATE)[: round(2.5 * SAMPLE_RATE)] for path in pair]
    chunking = fusion_inference.plan_chunks(loaded.model.config, codec, len(audio[0]), loaded.segment_seconds)
    assert chunking.starts == [0, SAMPLE_RATE] and chunking.samples == SAMPLE_RATE
    with torch.inference_mode():
        direct = []  # the model's own outputs for each chunk, all pairs
        for start in chunking.starts:
            sources = np.stack([a[start : start + chunking.samples] for a in audio])  # [2, S]
            latents = codec.encode(torch.from_numpy(sources)[:, None])  # [2, D, T]
            direct.append(loaded.model(latents[:1], latents[1:]))
        by_mode = {mode: fusion_inference.run_chunks(loaded.model, codec, *audio, chunking, mode, "cpu") for mode in ("best", "mean", 1)}

    best_pairs = []
    for index, result in enumerate(direct):
        losses = [float(terms.loss) for terms in result.novelty]
        best = int(np.argmin(losses))
        best_pairs.append(best)
        for mode, used, expected in (("best", best, result.outputs[best]), (1, 1, result.outputs[1]),
                                     ("mean", "mean", torch.stack(result.outputs).mean(dim=0))):
            chunk = by_mode[mode][index]
            assert chunk.window_metadata["pair_used"] == used, (mode, index)
            assert chunk.window_metadata["pair_novelty"] == pytest.approx(losses, abs=1e-6), (mode, index)
            torch.testing.assert_close(chunk.latent, expected, msg=f"{mode}, chunk {index}")
        assert float(by_mode["mean"][index].novelty.loss) == pytest.approx(np.mean(losses), abs=1e-6)
        assert float(by_mode["best"][index].novelty.loss) == pytest.approx(min(losses), abs=1e-6)
    # the fixture must tell "best" from "first pair" and from "one pair for all chunks"
    assert best_pairs == [2, 1], best_pairs


def fake_decode(codec, peak: float, kept_samples: int):
    """A deterministic stand-in for Griffin-Lim: a 220 Hz tone under the latent's loudness,
    peaking at ``peak`` within the first ``kept_samples`` (what fuse_pair keeps of the
    zero-padded last chunk). [B, D, T] -> [B, 1, T * hop]"""
    def decode(latents: torch.Tensor) -> torch.Tensor:
        loudness = latents.float().mean(dim=1).exp().repeat_interleave(codec.hop_length, dim=-1)  # [B, S]
        time = torch.arange(loudness.shape[-1]) / codec.sample_rate  # [S]
        wave = loudness * torch.sin(2 * torch.pi * 220.0 * time)  # [B, S]
        return (peak * wave / wave[:, :kept_samples].abs().amax(dim=-1, keepdim=True))[:, None]  # [B, 1, S]
    return decode


def test_a_loud_output_is_scaled_under_full_scale_and_the_gain_recorded(checkpoints, pair, tmp_path, monkeypatch):
    loaded = fusion_inference.load_fusion_checkpoint(checkpoints["compositional"])
    written = {}
    for name, peak in (("quiet", 0.5), ("loud", 3.8)):
        monkeypatch.setattr(loaded.codec, "decode", fake_decode(loaded.codec, peak, kept_samples=round(2.5 * SAMPLE_RATE)))
        report = fusion_inference.fuse_pair(loaded.model, loaded.codec, *pair, tmp_path / f"{name}.wav", "best", 1.0, "cpu")
        audio, _ = soundfile.read(tmp_path / f"{name}.wav", dtype="float32")
        written[name] = (report, audio)

    quiet_report, quiet = written["quiet"]
    assert quiet_report["output_gain"] == 1.0 and quiet_report["output_peak"] == pytest.approx(0.5)
    assert np.abs(quiet).max() == pytest.approx(0.5)
    loud_report, loud = written["loud"]
    gain = 0.99 / 3.8
    assert loud_report["output_peak"] == pytest.approx(3.8) and loud_report["output_gain"] == pytest.approx(gain)
    assert np.abs(loud).max() == pytest.approx(0.99) and np.abs(loud).max() <= 0.99
    # scaled, not clipped: the loud file is the quiet one times one gain, sample for sample
    np.testing.assert_allclose(loud, quiet * (3.8 / 0.5) * gain, atol=1e-6)
    # the correlations are the decoded output's, as if no gain had been applied
    sources = [read_mono(path, SAMPLE_RATE)[: len(loud)] for path in pair]
    assert loud_report["envelope_correlation"] == pytest.approx(fusion_inference.envelope_correlations(loud / gain, *sources), abs=1e-6)

    monkeypatch.setattr(loaded.codec, "decode", lambda latents: torch.full((1, 1, latents.shape[-1] * HOP), float("nan")))
    with pytest.raises(AudioError, match=r"fused output of .*: 60000 of 60000 samples are NaN or infinite"):
        fusion_inference.fuse_pair(loaded.model, loaded.codec, *pair, tmp_path / "nan.wav", "best", 1.0, "cpu")
    assert not (tmp_path / "nan.wav").exists()


def test_envelope_correlations_need_a_whole_envelope():
    swell = tone(0.5, 24_000) * np.linspace(0.0, 1.0, 12_000, dtype=np.float32)
    correlations = fusion_inference.envelope_correlations(swell, -swell, swell[::-1].copy())
    assert correlations["input"] == pytest.approx(1.0, abs=1e-4)  # an envelope has no sign
    assert correlations["target"] < -0.9  # a fade-out against a fade-in
    assert fusion_inference.envelope_correlations(swell[:10], swell, swell) == {"input": None, "target": None}
