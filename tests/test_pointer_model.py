"""Pointer network: presets, shapes, masking, causality, loss, metrics, batching, and that a
tiny model learns to conform and to edit (tiny configs on CPU)."""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from models.fusion_config import TrainingConfig
from models.losses import (
    PointerLoss,
    pointer_metric_fractions,
    pointer_metrics,
    stop_targets,
)
from models.pointer import (
    MASKED_LOGIT,
    PointerConfig,
    PointerNetwork,
    conform_log_probs,
    generate_edit,
    pad_pointer_samples,
    parameter_count,
    pointer_config_full,
    pointer_config_mini,
)
from models.pointer_training import (
    build_pointer_loss,
    evaluate_pointer,
    pointer_train_step,
)
from models.training import build_optimizer

MELS = 16
SILENCE = -4.0  # a log-mel value far below the unit-variance "sound" frames


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
    label_smoothing_frames=0,
    label_smoothing=0.0,
    max_frames=256,
)


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
    """A duck-typed ``datasets.augmentation.PointerSample``: the edit is raw at the pointers."""
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
    config = tiny_config("edit", label_smoothing_frames=2, label_smoothing=0.2)
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
        tiny_config("conform", label_smoothing=1.0)
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


# --------------------------------------------------------------------------- loss and metrics


def test_loss_without_neighbours_is_plain_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 9)
    pointers = torch.tensor([[0, 1, 2, 8, 4], [3, 3, 3, -1, -1]])
    weights = (pointers >= 0).float()
    raw_lengths = torch.tensor([9, 9])
    expected = F.cross_entropy(logits.reshape(-1, 9), pointers.reshape(-1), ignore_index=-1)
    for smoothing in (0.0, 0.3):  # with k = 0 there is no neighbour to move mass to
        result = PointerLoss(label_smoothing_frames=0, label_smoothing=smoothing)(logits, pointers, weights, raw_lengths)
        torch.testing.assert_close(result.terms["pointer"], expected)
        torch.testing.assert_close(result.total, expected)
        assert set(result.terms) == {"pointer"}


def test_loss_smooths_onto_neighbours_inside_the_raw_length():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 6)
    pointers = torch.tensor([[0, 3, 4]])
    raw_lengths = torch.tensor([5])  # raw frame 5 is padding
    logits[0, :, 5] = MASKED_LOGIT
    log_probs = torch.log_softmax(logits, dim=-1)[0]
    epsilon = 0.2
    targets = torch.zeros(3, 6)
    targets[0, [0, 1, 2]] = torch.tensor([1 - epsilon, epsilon / 2, epsilon / 2])  # only right-hand neighbours
    targets[1, [1, 2, 3, 4]] = torch.tensor([epsilon / 3, epsilon / 3, 1 - epsilon, epsilon / 3])  # frame 5 is outside
    targets[2, [2, 3, 4]] = torch.tensor([epsilon / 2, epsilon / 2, 1 - epsilon])
    expected = -(targets * log_probs).sum(dim=-1).mean()
    loss = PointerLoss(label_smoothing_frames=2, label_smoothing=epsilon)
    result = loss(logits, pointers, torch.ones(1, 3), raw_lengths)
    torch.testing.assert_close(result.terms["pointer"], expected)


def test_zero_weights_contribute_nothing():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 7)
    pointers = torch.tensor([[1, 2, 3, 6]])
    logits[0, 3] = -50.0
    logits[0, 3, 0] = 50.0  # frame 3 is hopelessly wrong, but weighs nothing
    loss = PointerLoss(label_smoothing_frames=1, label_smoothing=0.1)
    weights = torch.tensor([[1.0, 2.0, 1.0, 0.0]])
    result = loss(logits, pointers, weights, torch.tensor([7]))
    alone = loss(logits[:, :3], pointers[:, :3], weights[:, :3], torch.tensor([7]))
    torch.testing.assert_close(result.total, alone.total)
    nothing = loss(logits, pointers, torch.zeros(1, 4), torch.tensor([7]))
    assert nothing.total.item() == 0.0


def test_stop_bce_is_part_of_the_edit_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6)
    stop_logits = torch.randn(2, 4)
    pointers = torch.tensor([[0, 1, 2, 3], [4, 5, -1, -1]])
    weights = (pointers >= 0).float()
    targets = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    torch.testing.assert_close(stop_targets(pointers), targets)
    valid = weights.bool()
    expected_stop = F.binary_cross_entropy_with_logits(stop_logits[valid], targets[valid])
    loss = PointerLoss(stop_weight=0.5)
    result = loss(logits, pointers, weights, torch.tensor([6, 6]), stop_logits=stop_logits)
    torch.testing.assert_close(result.terms["stop"], expected_stop)
    torch.testing.assert_close(result.total, result.terms["pointer"] + 0.5 * expected_stop)

    cut_short = torch.tensor([True, False])  # row 1 was cut to fit: its last frame is no end
    torch.testing.assert_close(stop_targets(pointers, cut_short), torch.tensor([[0.0, 0, 0, 1], [0, 0, 0, 0]]))
    result = loss(logits, pointers, weights, torch.tensor([6, 6]), stop_logits=stop_logits, ends=cut_short)
    expected_stop = F.binary_cross_entropy_with_logits(stop_logits[valid], stop_targets(pointers, cut_short)[valid])
    torch.testing.assert_close(result.terms["stop"], expected_stop)


def test_pointer_metrics_count_exact_near_and_jumps():
    pointers = torch.tensor([[0, 1, 2, 10, 11, 3], [5, 6, 7, -1, -1, -1]])
    predicted = torch.tensor([[0, 1, 4, 12, 11, 9], [5, 0, 7, 0, 0, 0]])
    logits = F.one_hot(predicted, 16).float()  # argmax = predicted
    counts = pointer_metrics(logits, pointers, torch.tensor([6, 3]))
    # row 0: exact at 0, 1, 4; within ±2 also 2 (off by 2) and 3 (off by 2); jumps at 3 (10) and 5 (3)
    # row 1: exact at 0, 2; frame 1 off by 6; no jumps; padding ignored
    assert counts == {"frames": 9, "exact": 5, "within_2": 7, "jumps": 2, "jumps_within_2": 1}
    fractions = pointer_metric_fractions(counts)
    assert fractions == pytest.approx({"accuracy": 5 / 9, "accuracy_within_2": 7 / 9, "jump_accuracy_within_2": 0.5})
    no_jumps = pointer_metric_fractions({**counts, "jumps": 0, "jumps_within_2": 0})
    assert math.isnan(no_jumps["jump_accuracy_within_2"])


# --------------------------------------------------------------------------- batching


def test_pad_pointer_samples_pads_with_masks():
    long = SimpleNamespace(
        raw_mel=torch.ones(MELS, 10), edit_mel=torch.full((MELS, 4), 2.0), pointers=torch.tensor([0, 1, 2, 9]), weights=None
    )
    short = SimpleNamespace(
        raw_mel=torch.ones(MELS, 6), edit_mel=torch.full((MELS, 7), 3.0), pointers=torch.arange(7) % 6,
        weights=torch.linspace(0.1, 0.7, 7),
    )
    batch = pad_pointer_samples([long, short])
    assert batch.raw_mel.shape == (2, MELS, 10) and batch.edit_mel.shape == (2, MELS, 7)
    assert batch.raw_lengths.tolist() == [10, 6] and batch.edit_lengths.tolist() == [4, 7]
    assert batch.pointers.dtype == torch.int64 and batch.weights.dtype == torch.float32
    assert batch.pointers[0].tolist() == [0, 1, 2, 9, -1, -1, -1]
    assert batch.weights[0].tolist() == [1, 1, 1, 1, 0, 0, 0]
    torch.testing.assert_close(batch.weights[1], short.weights)
    assert (batch.raw_mel[1, :, 6:] == 0).all() and (batch.edit_mel[0, :, 4:] == 0).all()
    assert batch.ends.tolist() == [True, True]
    assert pad_pointer_samples([long, short], ends=[True, False]).ends.tolist() == [True, False]
    assert torch.equal(batch.to("cpu").pointers, batch.pointers)
    with pytest.raises(ValueError, match="sample 1"):
        pad_pointer_samples([long, SimpleNamespace(raw_mel=torch.ones(3, 5), edit_mel=short.edit_mel, pointers=short.pointers, weights=None)])


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
    metrics = pointer_train_step(model, batch, build_pointer_loss(config), optimizer)
    assert all(math.isfinite(metrics[name]) for name in ("total", "pointer", "grad_norm"))
    only_empty = pad_pointer_samples([empty])
    assert run(model, only_empty).logits.shape == (1, 1, 7)


# --------------------------------------------------------------------------- learning


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
    config = tiny_config("conform", conv_layers=1, label_smoothing_frames=1, label_smoothing=0.1)
    model = PointerNetwork(config)
    loss = build_pointer_loss(config)
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
    loss = build_pointer_loss(config)
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


def test_models_summary_lists_the_pointer_network(capsys):
    from pipelines.models import main as models_main

    assert models_main(["summary", "--pointer", "--config", "configs/pointer/mini.json", "--depth", "1"]) == 0
    printed = capsys.readouterr().out
    count = parameter_count(PointerNetwork(PointerConfig(model_dim=128, heads=4, encoder_layers=2, decoder_layers=2, feedforward_dim=512)))
    assert f"{count:,}" in printed and "mode=conform" in printed and "pointer_attention" in printed
