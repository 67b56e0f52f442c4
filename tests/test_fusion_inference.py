"""pipelines/fusion_inference.py: a fusion checkpoint back to a model, and a pair fused in
chunks; tiny mel-codec checkpoints, seconds of generated audio. (The files it writes are
checked through ``jingle fuse`` in test_fuse.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.audio import read_mono
from models.cascade import CascadeConfig, build_fusion_model
from models.checkpoints import CheckpointError, TrainingState, save_state, state_path
from models.codecs import build_codec
from models.fusion_config import FusionTrainConfig
from pipelines import fusion_inference
from tests.conftest import tone, write

# latent_dim must be the mel codec's 128 channels; everything else is as small as it goes
TINY_COMPOSITIONAL = {"component_dim": 8, "model_dim": 32, "heads": 4, "layers": 1,
                      "feedforward_dim": 64, "selector_hidden_dim": 16, "dropout": 0.0}
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


def test_select_output_takes_best_mean_or_an_index(checkpoints):
    loaded = fusion_inference.load_fusion_checkpoint(checkpoints["adaptive_window"])
    latents = torch.randn(2, 128, 75, generator=torch.Generator().manual_seed(0))  # [2, D, T]
    with torch.inference_mode():
        result = loaded.model(latents[:1], latents[1:])
    losses = [float(terms.loss) for terms in result.novelty]
    latent, _, index = fusion_inference.select_output(result, "best")
    assert index == int(np.argmin(losses)) and latent is result.outputs[index]
    assert fusion_inference.select_output(result, 2)[2] == 2
    mean, _, label = fusion_inference.select_output(result, "mean")
    assert label == "mean"
    torch.testing.assert_close(mean, torch.stack(result.outputs).mean(dim=0))


def test_envelope_correlations_need_a_whole_envelope():
    swell = tone(0.5, 24_000) * np.linspace(0.0, 1.0, 12_000, dtype=np.float32)
    correlations = fusion_inference.envelope_correlations(swell, -swell, swell[::-1].copy())
    assert correlations["input"] == pytest.approx(1.0, abs=1e-4)  # an envelope has no sign
    assert correlations["target"] < -0.9  # a fade-out against a fade-in
    assert fusion_inference.envelope_correlations(swell[:10], swell, swell) == {"input": None, "target": None}
