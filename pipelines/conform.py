"""``jingle conform``: recover the edit decision list of a finished edit of a raw recording.

    jingle conform --checkpoint CKPT RAW.wav EDITED.wav -o EDL.json
    jingle conform --method align RAW.wav EDITED.wav -o EDL.json      # no model

Writes EDL.json (raw segments ``[start_s, end_s]`` in play order with a confidence each),
EDL.npy (one raw frame per edit frame: the ``pointers/`` format of the training data) and
EDL.png (both log-mels and the pointer path). The network scores every raw frame for
every edit frame; a dynamic-programming path through those scores (the alignment's, with
log-probabilities in place of similarities) turns them into runs and cuts. ``--method
align`` matches mel frames directly (``datasets/alignment.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from jingle.datasets.alignment import align, edl_from_pointers, frame_confidence, viterbi
from jingle.models.pointer_decoding import conform_log_probs
from jingle.pipelines.common import EntryPoint, UsageError, add_common_arguments, local_device, reporting
from jingle.training.pointer_config import PointerTrainConfig
from jingle.pipelines.pointer_inference import load_pointer, read_log_mel, write_json
from jingle.pipelines.run_spec import ConformSpec, spec_from_args

PROG = "jingle conform"
# Jump and stay costs of the path through the network's log-probabilities (nats): a cut
# must gain more than this over continuing. Set like the alignment's default (6), not tuned:
# bench/pointer.py measures the path against per-frame argmax, not other penalties.
NETWORK_JUMP_PENALTY = 6.0
NETWORK_STAY_PENALTY = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("raw", help="the raw recording (WAV)")
    parser.add_argument("edited", help="the finished edit of it (WAV)")
    parser.add_argument("-o", "--out", required=True, help="EDL JSON to write (EDL.npy and EDL.png beside it)")
    parser.add_argument("--checkpoint", default=None, help="conform-mode pointer checkpoint (needed for --method network)")
    parser.add_argument("--method", choices=("network", "align"), default="network", help="network (default) or the alignment alone")
    parser.add_argument("--decode", choices=("path", "argmax"), default="path",
                        help="network pointers: best path through its scores (default) or each frame's argmax")
    parser.add_argument("--jump-penalty", type=float, default=None, help="cost of a cut in the path (default: per method)")
    parser.add_argument("--config", default=None, help="pointer config for --method align without a checkpoint (features, alignment)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    add_common_arguments(parser)


@dataclass
class Conformed:
    pointers: np.ndarray  # [Te]
    confidence: np.ndarray  # [Te]
    frame_rate: float
    method: str
    seconds: float
    edl: list[dict]
    paths: dict[str, str]

    def report(self) -> str:
        mean = float(self.confidence.mean()) if len(self.confidence) else 0.0
        lines = [f"conformed with {self.method}: {len(self.edl)} segments, mean confidence {mean:.2f}, {self.seconds:.1f} s"]
        for segment in self.edl[:12]:
            lines.append(f"  raw {segment['start_s']:8.2f} - {segment['end_s']:8.2f} s   (confidence {segment['confidence']:.2f})")
        if len(self.edl) > 12:
            lines.append(f"  ... and {len(self.edl) - 12} more")
        lines += [f"  {name:<5} {path}" for name, path in self.paths.items()]
        return "\n".join(lines)


def conform_with_network(loaded, raw_mel: np.ndarray, edit_mel: np.ndarray, *, decode: str, jump_penalty: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointers [Te] and confidence [Te] of an edit from a conform-mode network."""
    model = loaded.model
    device = next(model.parameters()).device
    log_probs = conform_log_probs(model, torch.from_numpy(raw_mel).to(device), torch.from_numpy(edit_mel).to(device)).cpu().numpy()  # [Te, Tr]
    if decode == "argmax":
        pointers = log_probs.argmax(axis=1).astype(np.int64)
    else:
        pointers = viterbi(log_probs, jump_penalty=jump_penalty, stay_penalty=NETWORK_STAY_PENALTY)
    confidence = frame_confidence(log_probs, pointers, radius=loaded.config.alignment.confidence_radius, temperature=1.0)
    return pointers, confidence


def run(spec: ConformSpec) -> Conformed:
    started = time.perf_counter()
    loaded = load_pointer(spec.checkpoint, mode="conform", device=local_device(spec.device)) if spec.checkpoint else None
    if loaded is not None:
        config = loaded.config
    else:
        config = PointerTrainConfig.from_file(spec.config) if spec.config else PointerTrainConfig()
    features = config.features
    _, raw_mel = read_log_mel(spec.raw, features)
    _, edit_mel = read_log_mel(spec.edited, features)
    if spec.method == "align":
        alignment = config.alignment
        if spec.jump_penalty is not None:
            alignment = replace(alignment, jump_penalty=spec.jump_penalty)
        found = align(raw_mel, edit_mel, alignment)
        pointers, confidence = found.pointers, found.confidence
    else:
        limit = loaded.config.model.max_frames
        if max(raw_mel.shape[1], edit_mel.shape[1]) > limit:
            raise UsageError(
                f"the recordings have {raw_mel.shape[1]} and {edit_mel.shape[1]} frames; this model reads at most {limit} "
                f"({limit / features.frame_rate:.0f} s): use --method align"
            )
        jump = NETWORK_JUMP_PENALTY if spec.jump_penalty is None else spec.jump_penalty
        pointers, confidence = conform_with_network(loaded, raw_mel, edit_mel, decode=spec.decode, jump_penalty=jump)
    edl = edl_from_pointers(pointers, features.frame_rate, confidence)
    out = Path(spec.out)
    pointers_path, figure_path = out.with_suffix(".npy"), out.with_suffix(".png")
    write_json(out, {
        "raw": str(Path(spec.raw).resolve()),
        "edited": str(Path(spec.edited).resolve()),
        "method": spec.method,
        "checkpoint": loaded.checkpoint if loaded else None,
        "frame_rate": features.frame_rate,
        "features": features.to_dict(),
        "edit_frames": int(len(pointers)),
        "mean_confidence": float(confidence.mean()) if len(confidence) else 0.0,
        "segments": edl,
        "pointers_file": pointers_path.name,
    })
    np.save(pointers_path, pointers.astype(np.int64))
    from jingle.pipelines.figures import pointer_figure

    pointer_figure(figure_path, raw_mel=raw_mel, edit_mel=edit_mel, pointers=pointers, confidence=confidence,
                   frame_rate=features.frame_rate, title=f"{Path(spec.edited).name} conformed to {Path(spec.raw).name} ({spec.method})")
    return Conformed(pointers, confidence, features.frame_rate, spec.method, time.perf_counter() - started, edl,
                     {"EDL": str(out), "npy": str(pointers_path), "PNG": str(figure_path)})


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, reporting(lambda args: run(spec_from_args(ConformSpec, args))))
spec = ConformSpec  # keyword arguments -> the spec of a run
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main

if __name__ == "__main__":
    sys.exit(main())
