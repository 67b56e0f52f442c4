"""The pointer loss and metrics (training/pointer_loss.py): plain and smoothed cross-entropy,
frame weights, the stop BCE, and the pointer accuracies."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from jingle.models.pointer import MASKED_LOGIT
from jingle.training.pointer_loss import PointerLoss, pointer_metric_fractions, pointer_metrics, stop_targets


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
