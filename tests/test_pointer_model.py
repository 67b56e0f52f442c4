"""Pointer network (models/pointer.py): presets, shapes, masking, causality, and a training
step on a batch with an empty edit (tiny configs on CPU). Its loss, decoding and batches
are tested in test_pointer_loss.py, test_pointer_decoding.py and test_pointer_sample.py."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from jingle.datasets.pointer_sample import pad_pointer_samples
from jingle.models.blocks import parameter_count
from jingle.models.pointer import (
    MASKED_LOGIT,
    PointerConfig,
    PointerNetwork,
    pointer_config_full,
    pointer_config_mini,
)
from jingle.training.pointer_loss import PointerLossConfig, build_pointer_loss
from jingle.training.pointer_training import pointer_train_step

MELS = 16


TINY = PointerConfig(
    n_mels=MELS,
    model_dim=32,
    heads=2,
    encoder_layers=1,
    decoder_layers=1,
    feedforward_dim=64,
    conv_kernel=3,
    conv_layers=2,
    dropout=0.0,
    max_frames=256,
)
TINY_LOSS = PointerLossConfig(label_smoothing_frames=0, label_smoothing=0.0)


def tiny_config(mode: str, **overrides) -> PointerConfig:
    return replace(TINY, mode=mode, **overrides)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These models are tiny: on a shared 2-core machine, two intra-op threads fight over the
    # cores and make each step ~50x slower than one thread does.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sample(raw_mel: torch.Tensor, pointers: torch.Tensor, weights: torch.Tensor | None = None) -> SimpleNamespace:
    """A duck-typed ``datasets.pointer_sample.PointerSample``: the edit is raw at the pointers."""
    return SimpleNamespace(raw_mel=raw_mel, edit_mel=raw_mel[:, pointers], pointers=pointers, weights=weights)


def random_batch(mode: str, *, seed: int = 0):
    """Two examples of different raw and edit lengths."""
    generator = torch.Generator().manual_seed(seed)
    first = sample(torch.randn(MELS, 12, generator=generator), torch.tensor([3, 4, 5, 9, 10, 0, 1]))
    second = sample(torch.randn(MELS, 8, generator=generator), torch.tensor([6, 7, 2, 3, 4]))
    return pad_pointer_samples([first, second])


def run(model: PointerNetwork, batch):
    return model(batch.raw_mel, batch.raw_lengths, batch.edit_mel, batch.edit_lengths, batch.pointers)


# --------------------------------------------------------------------------- config and presets


def test_presets_have_the_intended_sizes():
    for mode in ("conform", "edit"):
        full = parameter_count(PointerNetwork(pointer_config_full(mode)))
        mini = parameter_count(PointerNetwork(pointer_config_mini(mode)))
        print(f"pointer {mode}: full {full:,} parameters, mini {mini:,}")
        assert 14_000_000 <= full <= 16_000_000
        assert 1_000_000 <= mini <= 2_000_000


def test_config_round_trips_and_rejects_bad_values():
    config = tiny_config("edit")
    rebuilt = PointerConfig.from_dict(config.to_dict())
    assert rebuilt == config
    model = PointerNetwork(config)
    PointerNetwork(rebuilt).load_state_dict(model.state_dict())  # a checkpoint's config dict rebuilds the model
    with pytest.raises(ValueError, match="mode"):
        tiny_config("remix")
    with pytest.raises(ValueError, match="divisible by heads"):
        tiny_config("conform", heads=3)
    with pytest.raises(ValueError, match="conv_kernel must be odd"):
        tiny_config("conform", conv_kernel=4)
    with pytest.raises(ValueError, match="label_smoothing must be"):
        PointerLossConfig(label_smoothing=1.0)
    assert PointerLossConfig.from_dict(PointerLossConfig(label_smoothing_frames=3).to_dict()).label_smoothing_frames == 3
    with pytest.raises(ValueError, match="unknown PointerConfig key"):
        PointerConfig.from_dict({"model_width": 3})


# --------------------------------------------------------------------------- shapes, masking, causality


@pytest.mark.parametrize("mode", ["conform", "edit"])
def test_output_shapes(mode):
    torch.manual_seed(0)
    model = PointerNetwork(tiny_config(mode)).eval()
    batch = random_batch(mode)
    output = run(model, batch)
    assert output.logits.shape == (2, 7, 12)
    if mode == "edit":
        assert output.stop_logits.shape == (2, 7)
    else:
        assert output.stop_logits is None
    assert torch.isfinite(output.logits).all()


@pytest.mark.parametrize("mode", ["conform", "edit"])
def test_padding_is_masked_and_does_not_leak(mode):
    torch.manual_seed(0)
    model = PointerNetwork(tiny_config(mode)).eval()
    batch = random_batch(mode)
    with torch.no_grad():
        output = run(model, batch)
        assert (output.logits[1, :, 8:] < MASKED_LOGIT / 2).all()  # raw frames 8.. are padding for row 1

        batch.raw_mel[1, :, 8:] = 100.0 * torch.randn(MELS, 4)  # garbage in the padding
        batch.edit_mel[1, :, 5:] = 100.0 * torch.randn(MELS, 2)
        garbage = run(model, batch)
        torch.testing.assert_close(garbage.logits[1, :5, :8], output.logits[1, :5, :8], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(garbage.logits[0], output.logits[0], atol=1e-5, rtol=1e-5)

        alone = model(batch.raw_mel[1:, :, :8], batch.raw_lengths[1:], batch.edit_mel[1:, :, :5], batch.edit_lengths[1:], batch.pointers[1:, :5])
    torch.testing.assert_close(alone.logits[0], output.logits[1, :5, :8], atol=1e-5, rtol=1e-5)
    if mode == "edit":
        torch.testing.assert_close(alone.stop_logits[0], output.stop_logits[1, :5], atol=1e-5, rtol=1e-5)


def test_edit_mode_is_causal():
    torch.manual_seed(0)
    model = PointerNetwork(tiny_config("edit")).eval()
    batch = random_batch("edit")
    changed = batch.pointers.clone()
    step = 3
    changed[0, step:] = torch.tensor([11, 2, 8, 6])  # pointers from step 3 on
    with torch.no_grad():
        output = run(model, batch)
        other = model(batch.raw_mel, batch.raw_lengths, batch.edit_mel, batch.edit_lengths, changed)
    # the decoder reads pointer t-1 at step t: steps 0..3 have seen no changed pointer
    torch.testing.assert_close(other.logits[:, : step + 1], output.logits[:, : step + 1])
    torch.testing.assert_close(other.stop_logits[:, : step + 1], output.stop_logits[:, : step + 1])
    assert not torch.allclose(other.logits[0, step + 1], output.logits[0, step + 1])


def test_forward_rejects_bad_inputs():
    conform = PointerNetwork(tiny_config("conform"))
    edit = PointerNetwork(tiny_config("edit"))
    batch = random_batch("conform")
    with pytest.raises(ValueError, match="raw_mel must be"):
        conform(batch.raw_mel[:, :4], batch.raw_lengths, batch.edit_mel, batch.edit_lengths)
    with pytest.raises(ValueError, match="conform mode needs edit_mel"):
        conform(batch.raw_mel, batch.raw_lengths, None, batch.edit_lengths)
    with pytest.raises(ValueError, match="edit mode needs the true pointers"):
        edit(batch.raw_mel, batch.raw_lengths, batch.edit_mel, batch.edit_lengths)
    with pytest.raises(ValueError, match="raw_lengths must lie"):
        conform(batch.raw_mel, torch.tensor([12, 13]), batch.edit_mel, batch.edit_lengths)
    outside = batch.pointers.clone()
    outside[1, 0] = 9  # row 1 has 8 raw frames
    with pytest.raises(ValueError, match="pointers must lie"):
        edit(batch.raw_mel, batch.raw_lengths, batch.edit_mel, batch.edit_lengths, outside)


# --------------------------------------------------------------------------- a batch with an empty edit


@pytest.mark.parametrize("mode", ["conform", "edit"])
def test_an_empty_edit_in_a_batch_stays_finite_and_weighs_nothing(mode):
    torch.manual_seed(0)
    config = tiny_config(mode)
    model = PointerNetwork(config)
    full = sample(torch.randn(MELS, 9), torch.tensor([2, 3, 4]))
    empty = sample(torch.randn(MELS, 7), torch.zeros(0, dtype=torch.int64))
    batch = pad_pointer_samples([full, empty])
    assert batch.edit_lengths.tolist() == [3, 0]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    metrics = pointer_train_step(model, batch, build_pointer_loss(TINY_LOSS), optimizer)
    assert all(math.isfinite(metrics[name]) for name in ("total", "pointer", "grad_norm"))
    only_empty = pad_pointer_samples([empty])
    assert run(model, only_empty).logits.shape == (1, 1, 7)
