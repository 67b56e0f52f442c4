"""Losses of the fusion model, as modules or pure functions returning named terms.

``FusionLoss`` is the one place that combines them, from a ``LossWeights`` config:

    total = reconstruction_weight * reconstruction   (note 003's first term; see below)
          + loss_weight_spectral * (loss_weight_input * spectral(out, in)
                                    + loss_weight_target * spectral(out, tgt))
          + mask_reg_weight * novelty          (design note 004)
          + corr_weight * corr_cost            (design note 003)
          + gan_weight * gan                   (EnCodec's MS-STFT discriminator, optional)
          + teacher_weight * teacher           (the pair's reference arrangement, where known)
          + onset_weight * onsets              (notes start on the input's hits, on the target's partials)

``loss_weight_input`` and ``loss_weight_target`` balance the two spectral comparisons
against each other (note 000); ``loss_weight_spectral`` scales their sum.

Each codec says which domain its losses live in (``loss_domain``): EnCodec decodes
differentiably, so the losses are taken on decoded audio as the notes do; the mel codec's
Griffin-Lim decoder passes no gradient, so the losses are taken on its log-mel frames.

Shape letters: B batch, D latent channels (mel bins for the mel codec), T frames,
S samples, N envelope points (``parts``), K discriminator scales.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from jingle.core.config import config_from_dict, require_bool, require_number
from jingle.models.novelty import NoveltyTerms, novelty_loss
from jingle.training.adversarial import hinge_generator_loss
from jingle.training.arrangement_losses import arrangement_reconstruction, note_onset_loss, pearson
from jingle.training.loss_result import LossResult
from jingle.training.spectral_losses import LogMelFrames, MultiResolutionLogMelLoss, MultiResolutionSpectralLoss, rms_difference

ENVELOPE_PARTS = 250  # note 003: 384,000 samples / 250 = 1,536 samples ≈ 64 ms at 24 kHz
CORRELATION_CLAMP = 0.999  # note 003: caps the cost at -ln(0.001) ≈ 6.91
DOMAINS = ("audio", "mel")


# --------------------------------------------------------------------------- anti-modulation correlation (note 003)


@dataclass
class CorrelationTerms:
    """Anti-modulation correlation cost (design note 003).

    Attributes:
        cost: scalar, ``mean_b -ln(1 - clamp(|corr_in|, 0, 0.999)) - ln(1 - clamp(|corr_tgt|, 0, 0.999))``.
        corr_input: scalar, batch mean of the signed envelope correlation output-input.
        corr_target: scalar, batch mean of the signed envelope correlation output-target.
    """

    cost: torch.Tensor
    corr_input: torch.Tensor
    corr_target: torch.Tensor


def envelope(audio: torch.Tensor, parts: int = ENVELOPE_PARTS) -> torch.Tensor:
    """Amplitude envelope of note 003: the max of |x| over ``parts`` equal segments.

    As in the notes, the ``S % parts`` samples at the end are dropped (at most one
    segment's worth, < 0.4% of a 16 s clip).

    Args:
        audio: [B, 1, S] or [B, S] waveform, S >= parts.
    Returns:
        [B, N] with N = parts.
    """
    if audio.dim() == 3 and audio.shape[1] == 1:
        audio = audio[:, 0]  # [B, S]
    if audio.dim() != 2:
        raise ValueError(f"envelope expects [B, 1, S] or [B, S] audio, got {tuple(audio.shape)}")
    if parts < 2 or audio.shape[1] < parts:
        raise ValueError(f"envelope needs 2 <= parts <= samples, got parts={parts} for {audio.shape[1]} samples")
    segment = audio.shape[1] // parts
    segments = audio[:, : segment * parts].abs().reshape(audio.shape[0], parts, segment)  # [B, N, S/N]
    return segments.amax(dim=2)  # [B, N]


def frame_envelope(log_mel: torch.Tensor, parts: int = ENVELOPE_PARTS) -> torch.Tensor:
    """Envelope of log-mel frames, the mel-domain stand-in for ``envelope``.

    The frame energy is ``logsumexp`` over the mel bins (the log of the summed mel
    magnitudes): it stays finite and its gradient bounded for any output the model writes,
    where the plain sum of ``exp`` overflows on large outputs; a monotone map of the
    energy keeps a copied envelope strongly correlated.

    The energies are max-pooled into ``parts`` adaptive segments (4 or 5 frames each for
    a 16 s clip at 75 frames/s) rather than trimmed to equal ones as ``envelope`` does:
    trimming 1,200 frames to 250 × 4 would drop the last 200 frames (2.7 s). With fewer
    frames than ``parts`` there is nothing to pool, so the energies are linearly
    interpolated to ``parts`` points instead.

    Args:
        log_mel: [B, D, T] natural-log mel magnitudes.
    Returns:
        [B, N] with N = parts.
    """
    if log_mel.dim() != 3:
        raise ValueError(f"frame_envelope expects [B, D, T] log-mel frames, got {tuple(log_mel.shape)}")
    if parts < 2:
        raise ValueError(f"frame_envelope needs parts >= 2, got {parts}")
    energy = torch.logsumexp(log_mel, dim=1)[:, None]  # [B, 1, T]
    if energy.shape[-1] < parts:
        return F.interpolate(energy, size=parts, mode="linear", align_corners=True)[:, 0]  # [B, N]
    return F.adaptive_max_pool1d(energy, parts)[:, 0]  # [B, N]


def correlation_cost(input_env: torch.Tensor, target_env: torch.Tensor, output_env: torch.Tensor) -> CorrelationTerms:
    """Note 003's cost: -ln(1 - |corr|) for input and for target, summed, batch mean.

    |corr| is clamped to [0, 0.999] as the notes do, so the cost tops out at 6.91 and
    passes no gradient once an envelope correlates above 0.999.

    Args:
        input_env, target_env, output_env: [B, N] envelopes (``envelope`` or ``frame_envelope``).
    """
    corr_input = pearson(input_env, output_env)  # [B]
    corr_target = pearson(target_env, output_env)  # [B]
    cost_input = -torch.log(1.0 - corr_input.abs().clamp(0.0, CORRELATION_CLAMP))
    cost_target = -torch.log(1.0 - corr_target.abs().clamp(0.0, CORRELATION_CLAMP))
    return CorrelationTerms((cost_input + cost_target).mean(), corr_input.mean(), corr_target.mean())


def modulation_correlation(
    input_audio: torch.Tensor, target_audio: torch.Tensor, output_audio: torch.Tensor, *, parts: int = ENVELOPE_PARTS
) -> CorrelationTerms:
    """Note 003's ``compute_modulation_correlation`` on [B, 1, S] waveforms."""
    return correlation_cost(envelope(input_audio, parts), envelope(target_audio, parts), envelope(output_audio, parts))


# --------------------------------------------------------------------------- reconstruction (the arrangement's parts)


# --------------------------------------------------------------------------- weights and the combined loss


@dataclass(frozen=True)
class LossWeights:
    """Weights of the fusion losses; defaults are the design notes' recommendations.

    Attributes:
        loss_weight_spectral: 0.01 (note 004): keeps the output musical without pulling it
            back onto either source, which would undo the novelty and correlation terms.
        loss_weight_input: 1.0 (note 000): input and target count alike in the spectral
            loss, so neither source dominates (rms_in and rms_tgt should stay balanced).
        loss_weight_target: 1.0 (note 000), as above.
        mask_reg_weight: 0.1 (notes 003, 004): the novelty regularisation.
        corr_weight: 0.1 (note 003 recommends 0.5). The cost penalises any envelope
            correlation with the input, and an arrangement's loudness follows the input's
            rhythm (the rendered arrangements: 0.7-0.8, cost ~1.5), so at 0.5 it fights the
            reconstruction's rhythm half; 0.1 keeps it as a brake on copying
            (bench/fusion_quality.py, docs/benchmarks.md).
        gan_weight: 0.0, off: the GAN is optional (note 004); 0.01 when on, so it refines
            quality without dominating.
        shuffle_targets: pair each input with another example's target in training (the
            notes): a derangement of the batch, so no input keeps its own target and the
            model cannot learn one fixed pairing.
        discriminator_learning_rate: the GAN discriminator's AdamW rate (with gan_weight > 0).
        reconstruction_weight: 10.0: ``arrangement_reconstruction``, the output keeps the
            target's spectral shape and the input's loudness contour. Note 003's combined
            loss starts with a reconstruction term; without one nothing asks the output
            for either source's part (a previous model met the other terms with
            decorrelated bursts of near-silence). Chosen by hand with
            bench/fusion_quality.py (docs/benchmarks.md: Fusion quality): 5 and 10 did alike and
            best, 1 left the model at noise under the input's loudness.
        teacher_weight: 0.0, off: the spectral loss (``spectral``'s, multi-resolution) of
            the output against the pair's reference arrangement, on the rows that have one
            (pairs preprocessed with ``arrangement/`` files: the generated corpus renders
            one, ``datasets/synth.py``). User data usually has none, so it is off by
            default; on generated data it shows the model what an arrangement of these two
            sources sounds like, which no other term can (bench/fusion_quality.py).
        onset_weight: 0.0, off: ``note_onset_loss`` (``training/arrangement_losses.py``), the
            output's onsets on the target's partials follow the input's onsets, and little
            of its onset strength rises off those partials. The reconstruction's rhythm half
            credits a broadband burst on a hit as fully as a note starting there; this term
            does not (bench/fusion_quality.py, docs/benchmarks.md: Fusion quality).
    """

    loss_weight_spectral: float = 0.01
    loss_weight_input: float = 1.0
    loss_weight_target: float = 1.0
    mask_reg_weight: float = 0.1
    corr_weight: float = 0.1
    gan_weight: float = 0.0
    shuffle_targets: bool = True
    discriminator_learning_rate: float = 1e-4
    reconstruction_weight: float = 10.0
    teacher_weight: float = 0.0
    onset_weight: float = 0.0

    WEIGHTS: ClassVar[tuple[str, ...]] = (
        "reconstruction_weight", "loss_weight_spectral", "loss_weight_input", "loss_weight_target", "mask_reg_weight", "corr_weight",
        "gan_weight", "teacher_weight", "onset_weight",
    )

    def __post_init__(self) -> None:
        for name in self.WEIGHTS:
            require_number(name, getattr(self, name), minimum=0.0, maximum=math.inf, open_maximum=True)
        require_bool("shuffle_targets", self.shuffle_targets)
        require_number("discriminator_learning_rate", self.discriminator_learning_rate, minimum=0.0, open_minimum=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LossWeights:
        """Build from a config mapping; keys left out keep their defaults."""
        return config_from_dict(cls, values)


def loss_domain(codec: Any) -> str:
    """``"audio"`` for a codec whose decoder passes gradients (EnCodec), else ``"mel"``."""
    return "audio" if codec.differentiable_decode else "mel"


# domain -> (spectral loss builder, envelope of one signal)
_DOMAIN_PARTS: dict[str, tuple[Callable[[], nn.Module], Callable[[torch.Tensor, int], torch.Tensor]]] = {
    "audio": (MultiResolutionSpectralLoss, envelope),
    "mel": (MultiResolutionLogMelLoss, frame_envelope),
}


class FusionLoss(nn.Module):
    """The fusion model's loss: every term of the notes, combined from ``LossWeights``.

    Args:
        weights: the loss weights.
        domain: ``"audio"`` (output, input, target are [B, 1, S] decoded audio) or
            ``"mel"`` ([B, D, T] log-mel frames); ``loss_domain(codec)`` picks it.
        parts: envelope segments of the correlation cost (250 in note 003).
        sample_rate: of the audio domain's waveforms (for its log-mel frames).
    """

    def __init__(
        self, weights: LossWeights = LossWeights(), *, domain: str, parts: int = ENVELOPE_PARTS, sample_rate: int = 24_000
    ) -> None:
        super().__init__()
        if domain not in DOMAINS:
            raise ValueError(f"loss domain must be one of {DOMAINS}, got {domain!r}")
        self.weights = weights
        self.domain = domain
        self.parts = parts
        spectral_builder, self._envelope = _DOMAIN_PARTS[domain]
        self.spectral = spectral_builder()
        self.log_mel: nn.Module = nn.Identity() if domain == "mel" else LogMelFrames(sample_rate)

    @property
    def needs_discriminator(self) -> bool:
        return self.weights.gan_weight > 0

    def forward(
        self,
        output: torch.Tensor,
        input: torch.Tensor,
        target: torch.Tensor,
        *,
        novelty: NoveltyTerms | None = None,
        discriminator: nn.Module | None = None,
        arrangement: torch.Tensor | None = None,
        has_arrangement: torch.Tensor | None = None,
    ) -> LossResult:
        """Every term, and their weighted total.

        The terms: ``reconstruction``, ``reconstruction_harmony``,
        ``reconstruction_rhythm``, ``onsets``, ``onset_timing``, ``onset_purity`` (with 3
        frames or more), ``spectral``, ``spectral_input``, ``spectral_target``, ``rms_in``,
        ``rms_tgt``, ``corr_cost``, ``corr_input``, ``corr_target``; ``novelty``,
        ``similarity_to_input``, ``similarity_to_target`` when novelty is known; ``gan``
        when a discriminator was passed.

        Args:
            output, input, target: tensors of one shape, [B, 1, S] audio or [B, D, T]
                log-mel frames (see ``domain``).
            novelty: ``novelty_loss`` of the latents. In the mel domain the frames are the
                latents, so it is computed here when not given; in the audio domain it must
                be given unless ``mask_reg_weight`` is 0.
            discriminator: the MS-STFT discriminator (audio domain only); the ``gan`` term
                is computed only when one is passed. Its parameters receive gradients from
                this loss too: the training step zeroes them before the discriminator's update.
            arrangement: the pairs' reference arrangements, in ``output``'s domain and shape,
                and ``has_arrangement`` [B] bool: the ``teacher`` term is the spectral loss
                of the rows that have one (absent when none does).
        """
        self._check_inputs(output, input, target, discriminator)
        weights = self.weights
        terms: dict[str, torch.Tensor] = {}

        output_mel, input_mel, target_mel = self.log_mel(output), self.log_mel(input), self.log_mel(target)
        reconstruction = arrangement_reconstruction(output_mel, input_mel, target_mel)
        terms["reconstruction"] = reconstruction.loss
        terms["reconstruction_harmony"] = reconstruction.harmony
        terms["reconstruction_rhythm"] = reconstruction.rhythm
        if output_mel.shape[-1] >= 3:
            onsets = note_onset_loss(output_mel, input_mel, target_mel)
            terms["onsets"] = onsets.loss
            terms["onset_timing"] = onsets.timing
            terms["onset_purity"] = onsets.purity

        spectral_input = self.spectral(output, input)
        spectral_target = self.spectral(output, target)
        terms["spectral"] = weights.loss_weight_input * spectral_input + weights.loss_weight_target * spectral_target
        terms["spectral_input"] = spectral_input
        terms["spectral_target"] = spectral_target
        with torch.no_grad():  # reported, not weighted
            terms["rms_in"] = rms_difference(output, input)
            terms["rms_tgt"] = rms_difference(output, target)

        if novelty is None and self.domain == "mel":
            novelty = novelty_loss(output, input, target)
        if novelty is None and weights.mask_reg_weight > 0:
            raise ValueError(
                f"mask_reg_weight is {weights.mask_reg_weight} but no novelty terms were given: "
                "pass novelty=novelty_loss(output_latents, input_latents, target_latents)"
            )
        if novelty is not None:
            terms["novelty"] = novelty.loss
            terms["similarity_to_input"] = novelty.similarity_to_input
            terms["similarity_to_target"] = novelty.similarity_to_target

        correlation = correlation_cost(
            self._envelope(input, self.parts), self._envelope(target, self.parts), self._envelope(output, self.parts)
        )
        terms["corr_cost"] = correlation.cost
        terms["corr_input"] = correlation.corr_input
        terms["corr_target"] = correlation.corr_target

        if discriminator is not None:
            fake_logits, _ = discriminator(output)
            terms["gan"] = hinge_generator_loss(fake_logits)

        if arrangement is not None:
            rows = has_arrangement if has_arrangement is not None else torch.ones(len(output), dtype=torch.bool, device=output.device)
            if bool(rows.any()):
                terms["teacher"] = self.spectral(output[rows], arrangement[rows])

        weighted = [
            (weights.reconstruction_weight, "reconstruction"),
            (weights.loss_weight_spectral, "spectral"),
            (weights.mask_reg_weight, "novelty"),
            (weights.corr_weight, "corr_cost"),
            (weights.gan_weight, "gan"),
            (weights.teacher_weight, "teacher"),
            (weights.onset_weight, "onsets"),
        ]
        total = output.new_zeros(())
        for weight, name in weighted:
            # a zero weight adds nothing, not 0 * term: 0 * inf would make the total NaN
            if weight > 0 and name in terms:
                total = total + weight * terms[name]
        return LossResult(total, terms)

    def _check_inputs(
        self, output: torch.Tensor, input: torch.Tensor, target: torch.Tensor, discriminator: nn.Module | None
    ) -> None:
        if not (output.shape == input.shape == target.shape):
            raise ValueError(
                f"FusionLoss needs output, input and target of one shape, got "
                f"{tuple(output.shape)}, {tuple(input.shape)}, {tuple(target.shape)}"
            )
        if self.domain == "audio" and (output.dim() != 3 or output.shape[1] != 1):
            raise ValueError(f"the audio-domain FusionLoss expects [B, 1, S] audio, got {tuple(output.shape)}")
        if self.domain == "mel" and output.dim() != 3:
            raise ValueError(f"the mel-domain FusionLoss expects [B, D, T] log-mel frames, got {tuple(output.shape)}")
        if self.domain == "mel" and discriminator is not None:
            raise ValueError("the MS-STFT discriminator judges audio; the mel domain has no differentiable audio to give it")
