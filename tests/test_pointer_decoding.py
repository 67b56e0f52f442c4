"""Decoding a pointer network (models/pointer_decoding.py) once a tiny model has learnt on
CPU: conform log-probabilities, and edits generated greedily and by beam search."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from jingle.core.config import TrainingConfig
from jingle.datasets.pointer_sample import pad_pointer_samples
from jingle.training.optimization import build_optimizer
from jingle.models.pointer import PointerNetwork
from jingle.models.pointer_decoding import conform_log_probs, generate_edit
from jingle.training.pointer_loss import PointerLossConfig, build_pointer_loss
from jingle.training.pointer_training import evaluate_pointer, pointer_train_step
from tests.test_pointer_model import MELS, TINY_LOSS, _one_thread, sample, tiny_config  # noqa: F401 (_one_thread: autouse fixture)

SILENCE = -4.0  # a log-mel value far below the unit-variance "sound" frames


def conform_example(generator: torch.Generator) -> SimpleNamespace:
    """Random raw frames; the edit is three random raw spans in play order, plus noise."""
    raw_frames = int(torch.randint(30, 41, (1,), generator=generator))
    raw = torch.randn(MELS, raw_frames, generator=generator)
    spans = []
    for _ in range(3):
        length = int(torch.randint(4, 10, (1,), generator=generator))
        start = int(torch.randint(0, raw_frames - length + 1, (1,), generator=generator))
        spans.append(torch.arange(start, start + length))
    pointers = torch.cat(spans)
    noisy = sample(raw, pointers)
    noisy.edit_mel = noisy.edit_mel + 0.1 * torch.randn(noisy.edit_mel.shape, generator=generator)
    return noisy


def test_tiny_conform_model_learns_to_point():
    torch.manual_seed(0)
    config = tiny_config("conform", conv_layers=1)
    model = PointerNetwork(config)
    loss = build_pointer_loss(PointerLossConfig(label_smoothing_frames=1, label_smoothing=0.1))
    optimizer = build_optimizer(model, TrainingConfig(learning_rate=3e-3, weight_decay=0.0))
    generator = torch.Generator().manual_seed(1)
    history = []
    for _ in range(150):
        batch = pad_pointer_samples([conform_example(generator) for _ in range(8)])
        history.append(pointer_train_step(model, batch, loss, optimizer, grad_clip=1.0))
    assert {"total", "pointer", "accuracy", "accuracy_within_2", "grad_norm", "learning_rate"} <= set(history[-1])

    held_out = torch.Generator().manual_seed(99)
    metrics = evaluate_pointer(model, [pad_pointer_samples([conform_example(held_out) for _ in range(16)])], loss)
    print(f"conform: loss {history[0]['total']:.2f} -> {metrics['total']:.2f}, within ±2 {metrics['accuracy_within_2']:.2f}")
    assert metrics["total"] < 0.5 * history[0]["total"]
    assert metrics["accuracy_within_2"] > 0.6  # chance is ~5/35
    example = conform_example(held_out)
    log_probs = conform_log_probs(model, example.raw_mel, example.edit_mel)
    assert log_probs.shape == (example.edit_mel.shape[1], example.raw_mel.shape[1])
    torch.testing.assert_close(log_probs.exp().sum(dim=-1), torch.ones(log_probs.shape[0]))


def silence_skip_example(generator: torch.Generator) -> SimpleNamespace:
    """Random raw frames with one silent span; the edit is the raw recording without it."""
    raw_frames = int(torch.randint(16, 25, (1,), generator=generator))
    raw = torch.randn(MELS, raw_frames, generator=generator)
    length = int(torch.randint(3, 7, (1,), generator=generator))
    start = int(torch.randint(2, raw_frames - length - 2, (1,), generator=generator))
    raw[:, start : start + length] = SILENCE
    return sample(raw, torch.cat([torch.arange(0, start), torch.arange(start + length, raw_frames)]))


def test_tiny_edit_model_learns_to_skip_silence_and_stop():
    torch.manual_seed(0)
    config = tiny_config("edit")
    model = PointerNetwork(config)
    loss = build_pointer_loss(TINY_LOSS)
    optimizer = build_optimizer(model, TrainingConfig(learning_rate=3e-3, weight_decay=0.0))
    generator = torch.Generator().manual_seed(1)
    first = None
    for _ in range(200):
        batch = pad_pointer_samples([silence_skip_example(generator) for _ in range(8)])
        metrics = pointer_train_step(model, batch, loss, optimizer, grad_clip=1.0)
        first = first or metrics
    assert "stop" in metrics and metrics["total"] < 0.1 * first["total"]

    held_out = torch.Generator().manual_seed(99)
    for _ in range(4):
        example = silence_skip_example(held_out)
        for beam in (1, 3):
            edit = generate_edit(model, example.raw_mel, beam=beam, max_frames=40)
            assert edit.stopped, f"beam {beam} did not stop"
            assert edit.pointers.tolist() == example.pointers.tolist(), f"beam {beam}"
            assert edit.log_prob < 0

    cut = generate_edit(model, example.raw_mel, max_frames=5)
    assert cut.pointers.tolist() == example.pointers[:5].tolist() and not cut.stopped
    longer = len(example.pointers) + 3
    assert len(generate_edit(model, example.raw_mel, beam=2, max_frames=longer, min_frames=longer).pointers) == longer
