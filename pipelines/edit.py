"""``jingle edit``: make a new edit of a raw recording, in the style a pointer network learned.

    jingle edit --checkpoint CKPT RAW.wav -o EDITED.wav [--beam N]

An edit-mode network points, frame by frame, at the raw frame to play next (greedy, or a
beam search with ``--beam N``) until it predicts the end. The edit is the raw recording's
own audio at the chosen frames, at its own sample rate and channels, with a short
equal-power crossfade at every jump; EDITED.json holds its edit decision list and
EDITED.png both log-mels with the pointer path.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch

from jingle.datasets.alignment import edl_from_pointers, segments_from_pointers
from jingle.datasets.audio import splice, write_wav
from jingle.models.pointer_decoding import generate_edit
from jingle.pipelines.common import EntryPoint, UsageError, add_common_arguments, local_device, reporting
from jingle.pipelines.pointer_inference import load_pointer, read_log_mel, write_json
from jingle.pipelines.run_spec import EditSpec, spec_from_args

PROG = "jingle edit"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("raw", help="the raw recording (WAV)")
    parser.add_argument("-o", "--out", required=True, help="edited WAV to write (EDITED.json and EDITED.png beside it)")
    parser.add_argument("--checkpoint", required=True, help="edit-mode pointer checkpoint")
    parser.add_argument("--beam", type=int, default=1, help="beam width (default 1: greedy)")
    parser.add_argument("--max-seconds", type=float, default=None, help="longest edit (default: 1.5x the raw, within the model's limit)")
    parser.add_argument("--crossfade-ms", type=float, default=10.0, help="crossfade at every jump (default: 10 ms)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available)")
    add_common_arguments(parser)


@dataclass
class Edited:
    pointers: np.ndarray
    edl: list[dict]
    stopped: bool
    seconds: float
    edit_seconds: float
    paths: dict[str, str]

    def report(self) -> str:
        ending = "the model ended it" if self.stopped else "stopped at --max-seconds"
        lines = [f"edited: {self.edit_seconds:.2f} s in {len(self.edl)} segments ({ending}), {self.seconds:.1f} s"]
        for segment in self.edl[:12]:
            lines.append(f"  raw {segment['start_s']:8.2f} - {segment['end_s']:8.2f} s")
        if len(self.edl) > 12:
            lines.append(f"  ... and {len(self.edl) - 12} more")
        lines += [f"  {name:<5} {path}" for name, path in self.paths.items()]
        return "\n".join(lines)


def render(raw_path: str, pointers: np.ndarray, frame_rate: float, crossfade_seconds: float) -> tuple[np.ndarray, int]:
    """The raw file's own samples (native rate and channels) at the chosen frames.

    Frame ``i`` covers raw seconds ``[i, i + 1) / frame_rate``; each run of consecutive
    pointers is one span, spliced with a crossfade at every jump.
    """
    # read_mono has already checked this file (header, truncation, NaN) for the mels
    audio, sample_rate = soundfile.read(raw_path, dtype="float32", always_2d=True)  # [S, C]
    spans = []
    for segment in segments_from_pointers(pointers):
        start = round(segment.raw_start / frame_rate * sample_rate)
        end = min(len(audio), round(segment.raw_end / frame_rate * sample_rate))
        if end > start:
            spans.append((start, end))
    edited = splice(audio, spans, crossfade=round(crossfade_seconds * sample_rate))  # [S', C]
    return edited, sample_rate


def run(spec: EditSpec) -> Edited:
    started = time.perf_counter()
    loaded = load_pointer(spec.checkpoint, mode="edit", device=local_device(spec.device))
    features = loaded.config.features
    _, raw_mel = read_log_mel(spec.raw, features)
    limit = loaded.config.model.max_frames
    if raw_mel.shape[1] > limit:
        raise UsageError(f"{spec.raw} has {raw_mel.shape[1]} frames; this model reads at most {limit} ({limit / features.frame_rate:.0f} s)")
    max_frames = round(spec.max_seconds * features.frame_rate) if spec.max_seconds else round(1.5 * raw_mel.shape[1])
    max_frames = max(1, min(max_frames, limit))
    generated = generate_edit(loaded.model, torch.from_numpy(raw_mel), beam=spec.beam, max_frames=max_frames)
    pointers = generated.pointers.cpu().numpy().astype(np.int64)
    edited, sample_rate = render(spec.raw, pointers, features.frame_rate, spec.crossfade_ms / 1000)
    out = Path(spec.out)
    write_wav(out, edited, sample_rate, subtype="FLOAT")
    edl = edl_from_pointers(pointers, features.frame_rate)
    json_path, figure_path = out.with_suffix(".json"), out.with_suffix(".png")
    write_json(json_path, {
        "raw": str(Path(spec.raw).resolve()),
        "edited": str(out.resolve()),
        "checkpoint": loaded.checkpoint,
        "beam": spec.beam,
        "stopped_by_model": generated.stopped,
        "log_prob": generated.log_prob,
        "frame_rate": features.frame_rate,
        "edit_frames": int(len(pointers)),
        "segments": edl,
    })
    from jingle.pipelines.figures import pointer_figure

    # the edit's frames are the raw frames it plays (the crossfades aside): no need to read the WAV back
    pointer_figure(figure_path, raw_mel=raw_mel, edit_mel=raw_mel[:, pointers], pointers=pointers,
                   frame_rate=features.frame_rate, title=f"edit of {Path(spec.raw).name} (beam {spec.beam})")
    return Edited(pointers, edl, generated.stopped, time.perf_counter() - started, len(edited) / sample_rate,
                  {"WAV": str(out), "JSON": str(json_path), "PNG": str(figure_path)})


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, reporting(lambda args: run(spec_from_args(EditSpec, args))))
spec = EditSpec  # keyword arguments -> the spec of a run
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main

if __name__ == "__main__":
    sys.exit(main())
