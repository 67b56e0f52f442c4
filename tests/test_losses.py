"""Fusion losses: the correlation cost of note 003, envelopes, FusionLoss, weights, GAN terms."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from jingle.training.adversarial import (
    build_discriminator,
    discriminator_loss,
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
)
from jingle.training.arrangement_losses import note_onset_loss
from jingle.training.losses import (
    FusionLoss,
    arrangement_reconstruction,
    LossWeights,
    correlation_cost,
    envelope,
    frame_envelope,
    loss_domain,
    modulation_correlation,
    pearson,
)
from jingle.models.novelty import novelty_loss
from jingle.training.spectral_losses import LogMelFrames, MultiResolutionLogMelLoss

PARTS = 250
RECONSTRUCTION_TERMS = {"reconstruction", "reconstruction_harmony", "reconstruction_rhythm", "onsets", "onset_timing", "onset_purity"}
BASE_TERMS = RECONSTRUCTION_TERMS | {"spectral", "spectral_input", "spectral_target", "rms_in", "rms_tgt", "corr_cost", "corr_input", "corr_target"}
NOVELTY_TERMS = {"novelty", "similarity_to_input", "similarity_to_target"}


def orthonormal_rows(count: int, length: int, seed: int) -> torch.Tensor:
    """[count, length] zero-mean, mutually orthogonal, unit-norm rows."""
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(length, count, generator=generator, dtype=torch.float64)
    basis = basis - basis.mean(dim=0, keepdim=True)
    q, _ = torch.linalg.qr(basis)  # columns orthonormal and, as combinations of zero-mean columns, zero-mean
    return q.T


# --------------------------------------------------------------------------- novelty (note 004)


def reference_novelty(output, input, target, *, threshold):
    """The novelty loss written out example by example in float64: centre every channel
    over its frames, flatten, cosine; relu(similarity - threshold) summed over sources."""
    losses = []
    for o, i, t in zip(output.double(), input.double(), target.double()):
        vectors = [(x - x.mean(dim=1, keepdim=True)).flatten() for x in (o, i, t)]
        similarities = [float(vectors[0] @ v / (vectors[0].norm() * v.norm())) for v in vectors[1:]]
        losses.append(sum(max(0.0, s - threshold) for s in similarities))
    return torch.tensor(sum(losses) / len(losses), dtype=output.dtype)


def test_novelty_matches_its_definition_and_its_threshold_counts():
    generator = torch.Generator().manual_seed(3)
    source = torch.randn(2, 16, 30, generator=generator)
    output = source + 0.6 * torch.randn(2, 16, 30, generator=generator)  # similar to the input, ~0.85
    other = torch.randn(2, 16, 30, generator=generator)
    for threshold in (0.3, 0.7, 0.95):
        terms = novelty_loss(output, source, other, threshold=threshold)
        torch.testing.assert_close(terms.loss, reference_novelty(output, source, other, threshold=threshold))
    losses = [novelty_loss(output, source, other, threshold=t).loss.item() for t in (0.3, 0.7, 0.95)]
    assert losses[0] > losses[1] > losses[2] == 0.0


def test_novelty_ignores_level_and_average_spectrum():
    """Log-mel clips share a level and a spectral tilt: uncentred, any two score ~0.9.
    Centred, a copy scores 1 whatever its level, and unrelated clips or a stationary
    output score ~0."""
    generator = torch.Generator().manual_seed(4)
    tilt = torch.linspace(0.0, -8.0, 64)[None, :, None]  # [1, M, 1] shared spectral tilt
    input, target = (tilt - 6.0 + torch.randn(2, 1, 64, 200, generator=generator))  # [1, M, T] each
    stationary = (tilt - 6.0).expand_as(input) + 0.0
    assert torch.nn.functional.cosine_similarity(input.flatten(1), target.flatten(1)).item() > 0.9  # the old measure
    louder_copy = novelty_loss(target + 3.0, input, target)
    assert louder_copy.similarity_to_target.item() == pytest.approx(1.0, abs=1e-5)
    assert abs(louder_copy.similarity_to_input.item()) < 0.1
    flat = novelty_loss(stationary, input, target)
    assert abs(flat.similarity_to_input.item()) < 1e-6 and abs(flat.similarity_to_target.item()) < 1e-6
    assert flat.loss.item() == 0.0


# --------------------------------------------------------------------------- reconstruction


def frames_from(shape: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Log-mel frames [1, M, T] with a given spectral shape [M, T] (log-softmax'd) and frame log energy [T]."""
    return (torch.log_softmax(shape, dim=0) + level[None])[None]


def peaky(*size: int, generator: torch.Generator) -> torch.Tensor:
    """Log spectral shapes with a few loud bands per frame, as notes' partials are."""
    return 4.0 * torch.randn(*size, generator=generator)


def test_reconstruction_is_zero_for_the_target_shape_on_the_input_contour():
    generator = torch.Generator().manual_seed(5)
    input = frames_from(peaky(32, 96, generator=generator), torch.randn(96, generator=generator))
    target = frames_from(peaky(32, 96, generator=generator), torch.randn(96, generator=generator))
    target_shape = target[0] - torch.logsumexp(target[0], dim=0, keepdim=True)
    arrangement = frames_from(target_shape, 2.0 * torch.logsumexp(input[0], dim=0) + 1.0)
    terms = arrangement_reconstruction(arrangement, input, target, pool_frames=8)
    assert terms.harmony.item() == pytest.approx(0.0, abs=1e-5) and terms.rhythm.item() == pytest.approx(0.0, abs=1e-5)
    # each copy keeps one part only; a stationary output keeps no contour at all
    copy_target = arrangement_reconstruction(target, input, target, pool_frames=8)
    copy_input = arrangement_reconstruction(input, input, target, pool_frames=8)
    stationary = arrangement_reconstruction(frames_from(target_shape.mean(1, keepdim=True).expand(32, 96), torch.zeros(96)), input, target, pool_frames=8)
    assert copy_target.harmony.item() == pytest.approx(0.0, abs=1e-5) and copy_target.rhythm.item() > 0.5
    assert copy_input.rhythm.item() == pytest.approx(0.0, abs=1e-5) and copy_input.harmony.item() > 0.3
    assert stationary.rhythm.item() == pytest.approx(1.0, abs=1e-5)
    for terms in (copy_target, copy_input, stationary):
        assert terms.loss.item() > 0.3


def _struck(bins_at, starts: set[int], frames: int, bins: int = 48, decay: float = 0.25, floor: float = -8.0) -> torch.Tensor:
    """[1, M, T] log-mel frames: ``bins_at(t)`` sound from each start on, decaying by ``decay`` per frame."""
    frames_ = torch.full((bins, frames), floor)
    since = None
    for t in range(frames):
        since = 0 if t in starts else (None if since is None else since + 1)
        if since is not None:
            frames_[list(bins_at(t)), t] = max(-decay * since, floor)
    return frames_[None]


def test_the_onset_term_prefers_notes_on_the_hits_to_bursts_copies_and_late_notes():
    frames, beat = 150, 15
    hits = set(range(0, frames, beat))
    chord = lambda t: (8, 16, 24, 30) if t < 75 else (10, 18, 26, 32)  # noqa: E731 (one chord change)
    every_bin = lambda t: range(48)  # noqa: E731
    target = torch.maximum(_struck(chord, {0, 75}, frames, decay=0.0), torch.full((1, 48, frames), -8.0))
    input = _struck(every_bin, hits, frames, decay=1.0) - 1.0  # drum hits: broadband, short
    notes = _struck(chord, hits, frames)  # the target's chord struck on every hit
    outputs = {
        "burst on the hits over the held target": torch.maximum(target, input),
        "the target copied": target,
        "the chord struck half a beat late": _struck(chord, {t + 7 for t in hits}, frames),
        "the input copied": input,
    }
    best = note_onset_loss(notes, input, target, pool_frames=16)
    assert best.loss.item() < 0.01
    for name, output in outputs.items():
        terms = note_onset_loss(output, input, target, pool_frames=16)
        assert terms.loss.item() > best.loss.item() + 0.4, name
    burst = note_onset_loss(outputs["burst on the hits over the held target"], input, target, pool_frames=16)
    assert burst.purity.item() > 0.5  # a burst rises off the partials
    late = note_onset_loss(outputs["the chord struck half a beat late"], input, target, pool_frames=16)
    assert late.purity.item() < 0.01 and late.timing.item() > 0.8  # the right notes at the wrong time

    output = notes.clone().requires_grad_()
    note_onset_loss(output + 0.1 * torch.randn_like(notes), input, target).loss.backward()
    assert torch.isfinite(output.grad).all() and output.grad.abs().sum() > 0


def test_reconstruction_pools_the_harmony_over_frames():
    """Within a pooling window the harmony term does not care where the notes sit."""
    generator = torch.Generator().manual_seed(6)
    target = frames_from(peaky(16, 64, generator=generator), torch.zeros(64))
    moved = torch.cat([target[..., 1:8].flip(-1), target[..., :1], target[..., 8:]], dim=-1)  # reorder inside window 0
    assert arrangement_reconstruction(moved, target, target, pool_frames=8).harmony.item() == pytest.approx(0.0, abs=1e-5)
    assert arrangement_reconstruction(moved, target, target, pool_frames=1).harmony.item() > 0.1


def test_audio_domain_log_mel_frames_follow_the_frame_rate():
    frames = LogMelFrames(24_000)(torch.randn(2, 1, 24_000))
    assert frames.shape[0] == 2 and frames.shape[1] == 64 and abs(frames.shape[2] - 75) <= 1


# --------------------------------------------------------------------------- correlation cost


@pytest.mark.parametrize(
    "corr, expected", [(0.0, 0.00), (0.5, 0.69), (0.8, 1.61), (0.9, 2.30), (0.99, 4.61), (0.999, 6.91)]
)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_correlation_cost_matches_the_table_of_note_003(corr, expected, sign):
    x, z, w = orthonormal_rows(3, PARTS, seed=int(corr * 1000))
    c = sign * corr
    output_env = (c * x + math.sqrt(1 - c * c) * z)[None].float()  # [1, N], Pearson(x, ·) = c exactly
    input_env = x[None].float()
    target_env = w[None].float()  # uncorrelated with the output: its cost is 0

    assert pearson(input_env, output_env).item() == pytest.approx(c, abs=1e-5)
    terms = correlation_cost(input_env, target_env, output_env)
    assert terms.cost.item() == pytest.approx(expected, abs=0.01)
    assert terms.corr_input.item() == pytest.approx(c, abs=1e-5)
    assert terms.corr_target.item() == pytest.approx(0.0, abs=1e-5)


def test_correlation_cost_sums_input_and_target_and_averages_the_batch():
    x, z, _ = orthonormal_rows(3, PARTS, seed=1)
    output_env = torch.stack([x, 0.8 * x + 0.6 * z]).float()  # [2, N]: corr 1 and 0.8 with x
    cost = correlation_cost(output_env, output_env, output_env).cost  # every pair correlates perfectly
    assert cost.item() == pytest.approx(2 * -math.log(1 - 0.999), abs=1e-3)
    mixed = correlation_cost(x.expand(2, -1).float(), z.expand(2, -1).float(), output_env).cost
    # row 0: corr 1 with input (clamped) + 0 with target; row 1: 0.8 with input + 0.6 with target
    expected = (-math.log(0.001) + (-math.log(0.2) - math.log(0.4))) / 2
    assert mixed.item() == pytest.approx(expected, abs=1e-3)


def test_pearson_agrees_with_torch_corrcoef():
    generator = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 4, 50, generator=generator)
    y = y + 0.7 * x
    expected = torch.stack([torch.corrcoef(torch.stack([a, b]))[0, 1] for a, b in zip(x, y)])
    torch.testing.assert_close(pearson(x, y), expected, atol=1e-5, rtol=0)


def test_near_copy_costs_ten_times_an_independent_output_on_the_notes_shapes():
    # note 003's own example: 16 s at 24 kHz, 250 parts
    copy_costs, independent_costs = [], []
    for seed in range(3):
        generator = torch.Generator().manual_seed(seed)
        input_audio = torch.randn(2, 1, 384_000, generator=generator) * 0.5
        target_audio = torch.randn(2, 1, 384_000, generator=generator) * 0.3
        near_copy = input_audio + torch.randn(2, 1, 384_000, generator=generator) * 0.1
        independent = torch.randn(2, 1, 384_000, generator=generator) * 0.4
        copy_costs.append(modulation_correlation(input_audio, target_audio, near_copy, parts=PARTS).cost)
        independent_costs.append(modulation_correlation(input_audio, target_audio, independent, parts=PARTS).cost)
    copy_cost, independent_cost = torch.stack(copy_costs).mean(), torch.stack(independent_costs).mean()
    assert copy_cost >= 10 * independent_cost, (copy_cost, independent_cost)


def test_flat_output_envelope_gives_zero_correlation_and_finite_gradients():
    output = torch.zeros(2, 8, 300, requires_grad=True)  # constant frames: a flat envelope
    reference = torch.randn(2, 8, 300, generator=torch.Generator().manual_seed(0))
    terms = correlation_cost(frame_envelope(reference), frame_envelope(reference), frame_envelope(output))
    terms.cost.backward()
    assert terms.cost.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(output.grad).all()


# --------------------------------------------------------------------------- envelopes


def test_envelope_is_the_max_of_abs_per_segment_and_trims_the_remainder():
    segment, remainder = 6, 5
    audio = torch.zeros(2, 1, PARTS * segment + remainder)
    audio[0, 0, 3] = -2.0  # segment 0, negative: the envelope takes |x|
    audio[1, 0, segment * 7 + 1] = 1.5  # segment 7
    audio[:, 0, -remainder:] = 100.0  # in the trimmed remainder: never seen
    env = envelope(audio, PARTS)
    assert env.shape == (2, PARTS)
    assert env[0, 0].item() == 2.0 and env[1, 7].item() == 1.5
    assert env.max().item() == 2.0
    torch.testing.assert_close(envelope(audio[:, 0], PARTS), env)  # [B, S] reads as [B, 1, S]


def test_envelope_refuses_fewer_samples_than_parts():
    with pytest.raises(ValueError, match="parts=250"):
        envelope(torch.zeros(1, 1, 100), PARTS)


def test_frame_envelope_pools_every_frame_into_parts():
    frames = torch.full((2, 4, 1200), -10.0)  # 16 s at 75 frames/s
    frames[0, :, -1] = 0.0  # the last frame: trimming to 250 × 4 frames would lose it
    env = frame_envelope(frames, PARTS)
    assert env.shape == (2, PARTS)
    quiet = -10.0 + math.log(4)  # logsumexp of four equal bins
    assert env[0, -1].item() == pytest.approx(math.log(4), abs=1e-5)
    assert env[0, :-1].allclose(torch.tensor(quiet)) and env[1].allclose(torch.tensor(quiet))


def test_frame_envelope_interpolates_when_there_are_fewer_frames_than_parts():
    energies = torch.linspace(0.0, 9.0, 10)
    frames = energies.view(1, 1, 10).expand(1, 3, 10) - math.log(3)  # logsumexp over 3 bins = energies
    env = frame_envelope(frames, PARTS)
    assert env.shape == (1, PARTS)
    torch.testing.assert_close(env[0], torch.linspace(0.0, 9.0, PARTS), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- FusionLoss


def recomputed_total(weights: LossWeights, terms: dict[str, torch.Tensor]) -> torch.Tensor:
    spectral = weights.loss_weight_input * terms["spectral_input"] + weights.loss_weight_target * terms["spectral_target"]
    torch.testing.assert_close(terms["spectral"], spectral)
    total = weights.loss_weight_spectral * spectral + weights.corr_weight * terms["corr_cost"]
    total = total + weights.reconstruction_weight * terms["reconstruction"]
    total = total + weights.mask_reg_weight * terms.get("novelty", torch.tensor(0.0))
    return total + weights.gan_weight * terms.get("gan", torch.tensor(0.0))


def test_fusion_loss_in_the_audio_domain_reports_every_term_and_their_weighted_sum():
    generator = torch.Generator().manual_seed(0)
    input_audio, target_audio, start = torch.randn(3, 2, 1, 4800, generator=generator) * 0.3
    output = start.clone().requires_grad_(True)
    latents = torch.randn(3, 2, 16, 15, generator=generator)
    output_latents = latents[0].clone().requires_grad_(True)
    weights = LossWeights(loss_weight_spectral=0.3, loss_weight_input=0.7, loss_weight_target=1.3, gan_weight=0.01)
    discriminator = build_discriminator(filters=2)
    loss = FusionLoss(weights, domain="audio")

    novelty = novelty_loss(output_latents, latents[1], latents[2])
    result = loss(output, input_audio, target_audio, novelty=novelty, discriminator=discriminator)

    assert set(result.terms) == BASE_TERMS | NOVELTY_TERMS | {"gan"}
    assert all(torch.isfinite(value) and value.dim() == 0 for value in result.terms.values())
    torch.testing.assert_close(result.total, recomputed_total(weights, result.terms))
    assert result.terms["rms_in"].item() == pytest.approx((output - input_audio).pow(2).mean().sqrt().item(), rel=1e-5)
    result.total.backward()
    assert output.grad.abs().sum() > 0 and torch.isfinite(output.grad).all()
    assert output_latents.grad is not None
    scalars = result.scalars()
    assert set(scalars) == set(result.terms) | {"total"} and all(isinstance(v, float) for v in scalars.values())


def test_fusion_loss_in_the_mel_domain_computes_novelty_from_the_frames():
    generator = torch.Generator().manual_seed(1)
    for frames in (60, 300):  # fewer and more frames than envelope parts
        input_frames, target_frames, start = torch.randn(3, 2, 128, frames, generator=generator)
        output = start.clone().requires_grad_(True)
        weights = LossWeights()
        result = FusionLoss(weights, domain="mel")(output, input_frames, target_frames)

        assert set(result.terms) == BASE_TERMS | NOVELTY_TERMS
        assert all(torch.isfinite(value) for value in result.terms.values())
        torch.testing.assert_close(result.total, recomputed_total(weights, result.terms))
        # the mel frames are the latents: novelty at the notes' default threshold, on them
        expected = reference_novelty(output.detach(), input_frames, target_frames, threshold=0.7)
        torch.testing.assert_close(result.terms["novelty"], expected)
        result.total.backward()
        assert output.grad.abs().sum() > 0 and torch.isfinite(output.grad).all()


def test_fusion_loss_spectral_term_vanishes_on_a_copy():
    frames = torch.randn(2, 128, 40, generator=torch.Generator().manual_seed(2))
    result = FusionLoss(LossWeights(), domain="mel")(frames, frames, frames + 1.0)
    assert result.terms["spectral_input"].item() == 0.0
    assert result.terms["spectral_target"].item() == pytest.approx(1.0)
    assert result.terms["corr_input"].item() == pytest.approx(1.0, abs=1e-5)


def test_fusion_loss_refuses_what_it_cannot_compute():
    audio = torch.zeros(1, 1, 4800)
    with pytest.raises(ValueError, match="novelty"):
        FusionLoss(LossWeights(), domain="audio")(audio, audio, audio)
    result = FusionLoss(LossWeights(mask_reg_weight=0.0), domain="audio")(audio, audio, audio + 0.1)
    assert set(result.terms) == BASE_TERMS
    frames = torch.zeros(1, 128, 40)
    with pytest.raises(ValueError, match="discriminator judges audio"):
        FusionLoss(LossWeights(), domain="mel")(frames, frames, frames, discriminator=build_discriminator(filters=1))
    with pytest.raises(ValueError, match="one shape"):
        FusionLoss(LossWeights(), domain="mel")(frames, frames[..., :20], frames)
    with pytest.raises(ValueError, match="'latent'"):
        FusionLoss(LossWeights(), domain="latent")


def test_loss_domain_follows_the_codec_decoder():
    assert loss_domain(SimpleNamespace(differentiable_decode=True)) == "audio"
    assert loss_domain(SimpleNamespace(differentiable_decode=False)) == "mel"


# --------------------------------------------------------------------------- weights


def test_loss_weights_round_trip_and_validation():
    weights = LossWeights(corr_weight=0.25, gan_weight=0.01)
    assert LossWeights.from_dict(weights.to_dict()) == weights
    assert LossWeights.from_dict({"corr_weight": 0.25}).corr_weight == 0.25
    assert LossWeights().to_dict() == {
        "loss_weight_spectral": 0.01,
        "loss_weight_input": 1.0,
        "loss_weight_target": 1.0,
        "mask_reg_weight": 0.1,
        "corr_weight": 0.1,
        "gan_weight": 0.0,
        "shuffle_targets": True,
        "discriminator_learning_rate": 1e-4,
        "reconstruction_weight": 10.0,
        "teacher_weight": 0.0,
        "onset_weight": 0.0,
    }
    for bad in (-0.1, float("nan"), float("inf"), True, "0.5"):
        with pytest.raises(ValueError, match="corr_weight") as error:
            LossWeights(corr_weight=bad)
        assert repr(bad) in str(error.value)
    with pytest.raises(ValueError, match="'novelty_weight'"):
        LossWeights.from_dict({"novelty_weight": 0.1})


# --------------------------------------------------------------------------- GAN


def test_hinge_losses_have_the_right_signs():
    logits = [torch.tensor(value) for value in (-1.0, 0.0, 0.5, 2.0)]
    generator_losses = [hinge_generator_loss([logit]).item() for logit in logits]
    assert generator_losses == sorted(generator_losses, reverse=True) and generator_losses[-1] == 0.0
    assert hinge_discriminator_loss([torch.tensor(2.0)], [torch.tensor(-2.0)]).item() == 0.0
    assert hinge_discriminator_loss([torch.tensor(-1.0)], [torch.tensor(1.0)]).item() == pytest.approx(4.0)


def test_gan_losses_reach_the_right_parameters():
    torch.manual_seed(0)
    discriminator = build_discriminator(filters=2)
    real = torch.randn(2, 1, 4096) * 0.3
    fake = (torch.randn(2, 1, 4096) * 0.3).requires_grad_(True)

    fake_logits, fake_maps = discriminator(fake)
    assert len(fake_logits) == len(fake_maps) == discriminator.num_discriminators
    hinge_generator_loss(fake_logits).backward()
    assert fake.grad.abs().sum() > 0

    discriminator.zero_grad(set_to_none=True)
    fake.grad = None
    loss = discriminator_loss(discriminator, real, fake)
    loss.backward()
    assert fake.grad is None  # the discriminator's update does not train the generator
    parameters = list(discriminator.parameters())
    assert parameters and all(p.grad is not None and torch.isfinite(p.grad).all() for p in parameters)
    assert sum(p.grad.abs().sum() for p in parameters) > 0


def test_feature_matching_is_zero_on_equal_maps_and_trains_the_fake_only():
    real_maps = [[torch.randn(1, 2, 3, 4, requires_grad=True)]]
    fake_maps = [[torch.randn(1, 2, 3, 4, requires_grad=True)]]
    assert feature_matching_loss(real_maps, [[real_maps[0][0].detach()]]).item() == 0.0
    feature_matching_loss(real_maps, fake_maps).backward()
    assert fake_maps[0][0].grad is not None and real_maps[0][0].grad is None


def test_the_teacher_term_is_the_spectral_loss_of_the_rows_with_an_arrangement():
    torch.manual_seed(0)
    output, input, target, arrangement = (torch.randn(3, 8, 20) for _ in range(4))
    loss = FusionLoss(LossWeights(teacher_weight=2.0), domain="mel")
    has = torch.tensor([True, False, True])
    result = loss(output, input, target, arrangement=arrangement, has_arrangement=has)
    expected = MultiResolutionLogMelLoss()(output[has], arrangement[has])
    assert float(result.terms["teacher"]) == pytest.approx(float(expected), rel=1e-6)
    without = loss(output, input, target)
    assert "teacher" not in without.terms
    assert float(result.total - without.total) == pytest.approx(2.0 * float(expected), rel=1e-5)
    # the output equal to the arrangement on those rows: nothing to learn there
    output[has] = arrangement[has]
    assert float(loss(output, input, target, arrangement=arrangement, has_arrangement=has).terms["teacher"]) == 0.0
    # no row with an arrangement: no term, not a zero that would dilute the mean
    none = loss(output, input, target, arrangement=arrangement, has_arrangement=torch.zeros(3, dtype=torch.bool))
    assert "teacher" not in none.terms
