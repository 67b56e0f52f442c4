"""The loss terms that ask for an arrangement's parts (``training/losses.py`` combines them):
``arrangement_reconstruction`` (the target's spectral shape, the input's loudness contour)
and ``note_onset_loss`` (notes that start on the input's hits, on the target's partials).

Shape letters: B batch, M mel bins, T frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

RECONSTRUCTION_POOL_FRAMES = 32  # ~0.43 s at 75 frames/s: a beat at 140 bpm
ONSET_FLOOR = 9.2  # ln(10**4): rises more than 80 dB under a clip's loudest bin are noise (librosa's top_db)


def pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation per row, the formula of note 003 (n - 1 normalisation, 1e-8).

    Args:
        x, y: [B, N] with N >= 2.
    Returns:
        [B] in [-1, 1].
    """
    if x.shape != y.shape or x.dim() != 2 or x.shape[1] < 2:
        raise ValueError(f"pearson expects two [B, N>=2] tensors of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    n = x.shape[1]
    x_centered = x - x.mean(dim=1, keepdim=True)
    y_centered = y - y.mean(dim=1, keepdim=True)
    covariance = (x_centered * y_centered).sum(dim=1) / (n - 1)
    # The clamp leaves every value as the notes compute it (sqrt(tiny) ~ 1e-19 is lost
    # next to the 1e-8) but stops sqrt'(0) = inf turning a flat envelope's gradient to NaN.
    tiny = torch.finfo(x.dtype).tiny
    std_x = torch.sqrt(((x_centered**2).sum(dim=1) / (n - 1)).clamp_min(tiny))
    std_y = torch.sqrt(((y_centered**2).sum(dim=1) / (n - 1)).clamp_min(tiny))
    corr = covariance / (std_x * std_y + 1e-8)
    return torch.clamp(corr, -1.0, 1.0)


@dataclass
class ReconstructionTerms:
    """The reconstruction term: what of each source an arrangement keeps.

    Attributes:
        loss: scalar, ``harmony + rhythm``.
        harmony: scalar in [0, 1], total-variation distance between the output's and the
            target's spectral shapes (each frame's magnitude distribution over the mel
            bands), average-pooled over ``pool_frames``.
        rhythm: scalar, ``1 - pearson`` of the output's and the input's frame log
            energies (0 when the loudness follows the input's, 2 when inverted).
    """

    loss: torch.Tensor
    harmony: torch.Tensor
    rhythm: torch.Tensor


def arrangement_reconstruction(
    output: torch.Tensor, input: torch.Tensor, target: torch.Tensor, *, pool_frames: int = RECONSTRUCTION_POOL_FRAMES
) -> ReconstructionTerms:
    """Note 003's combined loss begins with a reconstruction term; a fusion has no
    ground-truth output, so this reconstructs the parts an arrangement takes from each
    source (note 004: the input's rhythm, the target's harmony and timbre), each from
    the one source it belongs to:

    - harmony and timbre: the frame's spectral *shape* (how its energy is spread over
      the bands, level removed) follows the target's, pooled over ``pool_frames`` (~0.4 s
      at 75 frames/s) so that the notes' placement inside a beat is free. The shapes are
      distributions (a softmax of the log-mel frame), compared by total variation, so the
      loud bands (the notes' partials) count and the noise floor does not: an L1 on the
      log frames weighs every quiet band like a partial, and a model met it by matching
      the spectral tilt while ignoring the chords (bench/fusion_quality.py);
    - rhythm: the frame *loudness* rises and falls with the input's (a correlation, so
      the input's level and timbre are not asked for).

    A copy of either source meets only half of it; a plain mix blurs both halves; a
    stationary output has no loudness contour at all (rhythm = 1). Its exact minimum
    (the target's sound modulated by the input's loudness) is what note 004 calls smart
    mixing, so the novelty term, not this one, has to push the output beyond it.

    Args:
        output, input, target: [B, M, T] natural-log mel frames.
        pool_frames: frames averaged per harmony comparison.
    """
    if not (output.shape == input.shape == target.shape) or output.dim() != 3:
        raise ValueError(
            f"arrangement_reconstruction needs three [B, M, T] tensors of one shape, got "
            f"{tuple(output.shape)}, {tuple(input.shape)}, {tuple(target.shape)}"
        )
    if pool_frames < 1:
        raise ValueError(f"pool_frames must be at least 1, got {pool_frames}")
    output_level = torch.logsumexp(output, dim=1, keepdim=True)  # [B, 1, T]
    input_level = torch.logsumexp(input, dim=1, keepdim=True)  # [B, 1, T]
    # ceil_mode keeps the last, partial window (averaged over the frames it has)
    output_shape = F.avg_pool1d(torch.softmax(output, dim=1), pool_frames, ceil_mode=True)  # [B, M, T/pool]
    target_shape = F.avg_pool1d(torch.softmax(target, dim=1), pool_frames, ceil_mode=True)  # [B, M, T/pool]
    harmony = 0.5 * (output_shape - target_shape).abs().sum(dim=1).mean()
    if output.shape[-1] >= 2:
        rhythm = (1.0 - pearson(output_level[:, 0], input_level[:, 0])).mean()
    else:  # one frame has no contour to follow
        rhythm = output.new_zeros(())
    return ReconstructionTerms(harmony + rhythm, harmony, rhythm)


@dataclass
class NoteOnsetTerms:
    """The note-onset term: the output's notes start when the input hits, on the target's partials.

    Attributes:
        loss: scalar, ``timing + purity``.
        timing: scalar in [0, 2], ``1 - pearson`` of the output's onset strength on the
            target's partials and the input's onset strength, over frames.
        purity: scalar in [0, 1], the share of the output's onset strength that rises off
            the target's partials (0.5 for a broadband burst, near 0 for notes).
    """

    loss: torch.Tensor
    timing: torch.Tensor
    purity: torch.Tensor


def _rises(log_mel: torch.Tensor) -> torch.Tensor:
    """[B, M, T] -> [B, M, T-1]: spectral flux per bin (the rise of each bin from one frame
    to the next), with every bin floored ``ONSET_FLOOR`` under the clip's loudest, so that
    the noise floor's flicker is not an onset (librosa's ``onset_strength`` does the same)."""
    floor = log_mel.detach().amax(dim=(1, 2), keepdim=True) - ONSET_FLOOR
    floored = torch.maximum(log_mel, floor)
    return F.relu(floored[..., 1:] - floored[..., :-1])


def note_onset_loss(
    output: torch.Tensor, input: torch.Tensor, target: torch.Tensor, *, pool_frames: int = RECONSTRUCTION_POOL_FRAMES
) -> NoteOnsetTerms:
    """What the reconstruction's rhythm half cannot tell apart: a broadband burst on the
    input's hit and a note that starts there.

    The target's partials at each frame are its spectral shape (a softmax over the bins)
    averaged over ``pool_frames`` around the frame and scaled to 1 at the strongest bin:
    where the target's harmony sounds in this beat, whenever its own notes start. The
    output's onset strength is split by that weight into what rises on the partials
    (``tonal``) and what rises off them (``stray``), each a weighted mean over the bins:

    - timing: ``tonal`` rises and falls with the input's onset strength (a correlation,
      so the input's level and the number of partials are not asked for);
    - purity: ``stray`` is a small share of all the rise. A burst rises everywhere alike
      (share 0.5); the target copied as it is rises on its partials, but when the target
      moves, not when the input hits (timing ~1).

    Args:
        output, input, target: [B, M, T] natural-log mel frames, T >= 3.
        pool_frames: frames averaged for the target's partials.
    """
    if not (output.shape == input.shape == target.shape) or output.dim() != 3 or output.shape[-1] < 3:
        raise ValueError(
            f"note_onset_loss needs three [B, M, T>=3] tensors of one shape, got "
            f"{tuple(output.shape)}, {tuple(input.shape)}, {tuple(target.shape)}"
        )
    if pool_frames < 1:
        raise ValueError(f"pool_frames must be at least 1, got {pool_frames}")
    frames = target.shape[-1]
    shape = torch.softmax(target.detach(), dim=1)  # [B, M, T]
    pooled = F.avg_pool1d(shape, pool_frames, stride=1, padding=pool_frames // 2, count_include_pad=False)[..., :frames]
    partials = (pooled / pooled.amax(dim=1, keepdim=True))[..., 1:]  # [B, M, T-1] in [0, 1]
    rises = _rises(output)  # [B, M, T-1]
    tonal = (partials * rises).sum(dim=1) / partials.sum(dim=1)  # [B, T-1]
    off = 1.0 - partials
    stray = (off * rises).sum(dim=1) / off.sum(dim=1).clamp_min(1e-6)  # [B, T-1]
    hits = _rises(input.detach()).mean(dim=1)  # [B, T-1]
    timing = (1.0 - pearson(tonal, hits)).mean()
    purity = (stray.sum(dim=1) / (tonal.sum(dim=1) + stray.sum(dim=1) + 1e-6)).mean()
    return NoteOnsetTerms(timing + purity, timing, purity)
