"""Decoding a trained pointer network: the pointers of a given edit, or a new edit.

- ``conform_log_probs`` (conform mode): the log-probabilities of every raw frame for every
  edit frame, in one pass.
- ``generate_edit`` (edit mode): an edit of a raw recording, greedily or by beam search,
  until the stop head ends it.

Shape letters: M mel bins, D model width, Tr raw frames, Te edit frames, K hypotheses of a beam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from jingle.models.pointer import PointerNetwork, frame_mask


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def conform_log_probs(model: PointerNetwork, raw_mel: torch.Tensor, edit_mel: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of every raw frame for every edit frame, in one pass.

    Puts the model in eval mode. Args: raw_mel [M, Tr], edit_mel [M, Te] log-mel frames.
    Returns: [Te, Tr] log-softmax over raw frames (argmax: the pointers).
    """
    if model.config.mode != "conform":
        raise ValueError(f"conform_log_probs needs a conform-mode model, this one is {model.config.mode!r}")
    if raw_mel.dim() != 2 or edit_mel.dim() != 2:
        raise ValueError(f"raw_mel and edit_mel must be [M, T], got {tuple(raw_mel.shape)} and {tuple(edit_mel.shape)}")
    model.eval()
    device = _device(model)
    output = model(
        raw_mel[None].to(device, torch.float32),
        torch.tensor([raw_mel.shape[1]], device=device),
        edit_mel[None].to(device, torch.float32),
        torch.tensor([edit_mel.shape[1]], device=device),
    )
    return torch.log_softmax(output.logits[0].float(), dim=-1)  # [Te, Tr]


@dataclass
class GeneratedEdit:
    """Result of ``generate_edit``.

    Attributes:
        pointers: [T] int64 raw frame of every generated edit frame.
        log_prob: log-probability of the pointers and of the stop decisions taken.
        stopped: whether the stop head ended the edit (False: ``max_frames`` was reached).
    """

    pointers: torch.Tensor
    log_prob: float
    stopped: bool


@dataclass
class _Hypothesis:
    pointers: list[int]
    log_prob: float

    @property
    def score(self) -> float:  # length-normalised, so that long edits are not penalised for their length
        return self.log_prob / len(self.pointers)


@torch.inference_mode()
def generate_edit(
    model: PointerNetwork, raw_mel: torch.Tensor, *, beam: int = 1, max_frames: int, min_frames: int = 1
) -> GeneratedEdit:
    """Generate an edit of one raw recording, greedily (``beam=1``) or by beam search.

    At every step each hypothesis either stops (its last frame is the one just pointed at;
    score + log p(stop)) or goes on (+ log p(continue)). Hypotheses are ranked by
    length-normalised log-probability. With ``beam=1`` this is greedy decoding: the best
    pointer, and stop when p(stop) > 0.5. Puts the model in eval mode.

    The raw recording is encoded once; the decoder is re-run on the whole prefix at every
    step (no key/value cache), O(T²) decoder work: simple and correct, fast enough for the
    lengths an edit has.

    Args:
        raw_mel: [M, Tr] log-mel frames.
        beam: hypotheses kept per step.
        max_frames: longest edit generated.
        min_frames: no stop before this many frames.
    """
    config = model.config
    if config.mode != "edit":
        raise ValueError(f"generate_edit needs an edit-mode model, this one is {config.mode!r}")
    if raw_mel.dim() != 2 or raw_mel.shape[0] != config.n_mels:
        raise ValueError(f"raw_mel must be [{config.n_mels}, Tr], got {tuple(raw_mel.shape)}")
    if beam < 1 or not 1 <= min_frames <= max_frames <= config.max_frames:
        raise ValueError(
            f"need beam >= 1 and 1 <= min_frames <= max_frames <= {config.max_frames}, "
            f"got beam={beam}, min_frames={min_frames}, max_frames={max_frames}"
        )
    model.eval()
    device = _device(model)
    raw_lengths = torch.tensor([raw_mel.shape[1]], device=device)  # [1]
    encoding = model.encoder(raw_mel[None].to(device, torch.float32), frame_mask(raw_lengths, raw_mel.shape[1]))  # [1, Tr, D]

    alive = [_Hypothesis([], 0.0)]
    finished: list[_Hypothesis] = []
    for step in range(max_frames):
        count = len(alive)
        # the last column is a placeholder: logits at step t read pointers before t only
        prefix = torch.tensor([hypothesis.pointers + [0] for hypothesis in alive], device=device)  # [K, t+1]
        output = model.decode(
            encoding.expand(count, -1, -1),
            raw_lengths.expand(count),
            edit_mel=None,
            edit_lengths=torch.full((count,), step + 1, device=device),
            pointers=prefix,
        )
        pointer_log_probs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)  # [K, Tr]
        stop_logits = output.stop_logits[:, -1].float()  # [K]
        top_log_probs, top_pointers = pointer_log_probs.topk(min(beam, pointer_log_probs.shape[1]), dim=-1)  # [K, beam]
        may_stop = step + 1 >= min_frames
        candidates = []  # (log_prob, hypothesis index, pointer, stops)
        for k in range(count):
            stop, go_on = float(F.logsigmoid(stop_logits[k])), float(F.logsigmoid(-stop_logits[k]))
            for log_prob, pointer in zip(top_log_probs[k].tolist(), top_pointers[k].tolist()):
                base = alive[k].log_prob + log_prob
                candidates.append((base + go_on, k, pointer, False))
                if may_stop:
                    candidates.append((base + stop, k, pointer, True))
        candidates.sort(key=lambda candidate: candidate[0], reverse=True)
        next_alive = []
        for rank, (log_prob, k, pointer, stops) in enumerate(candidates):
            hypothesis = _Hypothesis(alive[k].pointers + [pointer], log_prob)
            if stops and rank < beam:
                finished.append(hypothesis)
            elif not stops and len(next_alive) < beam:
                next_alive.append(hypothesis)
        alive = next_alive
        finished = sorted(finished, key=lambda hypothesis: hypothesis.score, reverse=True)[:beam]
        best_alive = max((hypothesis.score for hypothesis in alive), default=-math.inf)
        if len(finished) >= beam and best_alive <= finished[-1].score:
            break
    stopped = bool(finished)
    best = max(finished or alive, key=lambda hypothesis: hypothesis.score)
    return GeneratedEdit(torch.tensor(best.pointers, dtype=torch.int64), best.log_prob, stopped)
