"""Peak memory of decoding one fusion pair, by recording length: streamed reads against whole-file reads.

    python bench/decode_memory.py [--minutes 0.333 20 120] [--baseline-up-to 120]
                                  [--codec mel|encodec_24khz] [--segment-seconds 16] [--work DIR] [--smoke]

For every length, a pair of generated WAVs (44.1 kHz stereo PCM_16 noise, written a block
at a time so that the generator holds one block) is decoded in a fresh Python process,
and that process's peak RSS (``ru_maxrss``) is printed for two ways of decoding:

- **streamed**: ``decode_fusion_pairs``, the function a Ray Data decode task runs for a
  pair (files checked, then read side by side a block at a time and cut as they come);
- **whole** (the baseline): the path preprocessing took before, kept here as
  ``whole_file_decode``: each side read whole into mono float32, resampled whole by
  torchaudio, then cut into the same windows.

Every batch either way yields is encoded by the codec as an encoder actor encodes it
(``encode_windows``) and then dropped, as the pipeline drops it once written; only the
rows' window hashes are kept, to check that both ways made the same rows. A third process,
**floor**, imports the same modules, builds the codec and encodes one batch of windows:
what every decode process holds before it reads a file. The ratio is the whole-file peak
over the streamed one; "added" is each peak less the floor. Torch runs one thread, as in a
Ray decode task (Ray sets OMP_NUM_THREADS=1 for a task that reserves under one CPU).

RSS counts what the allocator keeps as well as what is live: glibc raises its mmap
threshold after large frees, so later window buffers come from a heap that does not
shrink. Run with ``MALLOC_MMAP_THRESHOLD_=131072``, the 20-minute streamed peak fell from
963 to 857 MB (floor 802); the whole-file figures hardly moved.

The whole-file baseline needs several GB for a two-hour pair (both sides at 44.1 kHz and
24 kHz, plus torchaudio's padded copy and its convolution output); ``--baseline-up-to``
skips it for longer recordings. The WAVs go to a temporary folder under ``--work``
(default: the system's) that is deleted afterwards; a two-hour pair takes 2.5 GB of disk.
``--smoke`` (pairs of 3 s and 12 s, 1 s windows) checks that everything runs.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile

FILE_RATE = 44_100
CHANNELS = 2
# frames generated and written at a time (the generator's memory: ~8 MB of float64 noise)
WRITE_BLOCK_FRAMES = 1 << 19
ROLES = ("input", "target")
WINDOWS_PER_BATCH = 8  # fusion_preprocess._WINDOWS_PER_BLOCK: the rows of one decoded batch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[20 / 60, 20.0, 120.0], help="recording lengths")
    parser.add_argument("--baseline-up-to", type=float, default=120.0, metavar="MINUTES",
                        help="measure the whole-file baseline only for recordings up to this long")
    parser.add_argument("--codec", default="mel", choices=["mel", "encodec_24khz"])
    parser.add_argument("--segment-seconds", type=float, default=16.0)
    parser.add_argument("--work", type=Path, default=None, help="where the temporary WAVs and results.json go (default: the WAVs in the system's temp folder, no results.json)")
    parser.add_argument("--smoke", action="store_true", help="pairs of 3 s and 12 s with 1 s windows: checks that it runs")
    # one measurement in this process (what the parent runs in a fresh subprocess)
    parser.add_argument("--child", choices=["streamed", "whole", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--codec-checkpoint", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.smoke:
        args.minutes, args.segment_seconds = [0.05, 0.2], 1.0
    if args.child:
        print(json.dumps(measure(args)))
        return 0

    from bench.machine import describe_machine

    print(describe_machine())
    work = args.work or Path(tempfile.gettempdir())
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = None
    if args.codec != "mel":
        from bench.preprocess import random_encodec_checkpoint

        checkpoint = random_encodec_checkpoint(work)
    common = ["--codec", args.codec, "--segment-seconds", str(args.segment_seconds)]
    common += ["--codec-checkpoint", str(checkpoint)] if checkpoint else []
    floor = run_child("floor", None, common)
    print(f"floor (imports, {args.codec} codec, one encoded batch): {floor['peak_rss_mb']:.0f} MB")
    header = (f"{'length':>8}  {'streamed MB':>11}  {'whole MB':>9}  {'whole/streamed':>14}  "
              f"{'added: streamed':>15}  {'whole':>7}  {'rows':>5}  {'same rows':>9}  {'wall s (streamed, whole)':>24}")
    print(header)
    started = time.perf_counter()
    lengths = []
    for minutes in args.minutes:
        with tempfile.TemporaryDirectory(prefix="decode-memory-", dir=work) as folder:
            pair = {role: Path(folder) / f"{role}.wav" for role in ROLES}
            for seed, role in enumerate(ROLES):
                write_noise(pair[role], minutes * 60, seed=seed)
            streamed = run_child("streamed", pair, common)
            whole = run_child("whole", pair, common) if minutes <= args.baseline_up_to else None
        print(row(minutes, streamed, whole, floor), flush=True)
        lengths.append({"minutes": minutes, "streamed_mb": streamed["peak_rss_mb"], "whole_mb": whole["peak_rss_mb"] if whole else None,
                        "same_rows": whole["rows_sha256"] == streamed["rows_sha256"] if whole else None, "rows": streamed["rows"]})
    print(f"total wall {time.perf_counter() - started:.0f} s")
    results = {"codec": args.codec, "floor_mb": floor["peak_rss_mb"], "lengths": lengths}
    if args.work:
        (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


def row(minutes: float, streamed: dict, whole: dict | None, floor: dict) -> str:
    """One line of the table; "added" is left out for a pair of less than one full batch
    (the floor encoded a full one)."""
    length = f"{minutes * 60:.0f} s" if minutes < 1 else f"{minutes:.0f} min"
    counts = streamed["rows"] >= WINDOWS_PER_BATCH
    added = {kind: f"{result['peak_rss_mb'] - floor['peak_rss_mb']:.0f}" if result and counts else "-"
             for kind, result in (("streamed", streamed), ("whole", whole))}
    if whole is None:
        whole_mb, ratio, same, whole_wall = "skipped", "-", "-", "-"
    else:
        whole_mb, ratio = f"{whole['peak_rss_mb']:.0f}", f"{whole['peak_rss_mb'] / streamed['peak_rss_mb']:.2f}"
        same, whole_wall = ("yes" if whole["rows_sha256"] == streamed["rows_sha256"] else "NO"), f"{whole['wall_s']:.1f}"
    return (f"{length:>8}  {streamed['peak_rss_mb']:>11.0f}  {whole_mb:>9}  {ratio:>14}  {added['streamed']:>15}  "
            f"{added['whole']:>7}  {streamed['rows']:>5}  {same:>9}  {streamed['wall_s']:>11.1f}, {whole_wall:>11}")


def write_noise(path: Path, seconds: float, *, seed: int) -> None:
    """A 44.1 kHz stereo PCM_16 WAV of seeded noise, written a block at a time."""
    rng = np.random.default_rng(seed)
    total = round(seconds * FILE_RATE)
    with soundfile.SoundFile(str(path), "w", samplerate=FILE_RATE, channels=CHANNELS, subtype="PCM_16") as handle:
        for start in range(0, total, WRITE_BLOCK_FRAMES):
            frames = min(WRITE_BLOCK_FRAMES, total - start)
            handle.write(0.2 * rng.standard_normal((frames, CHANNELS)))  # [S, C]


def run_child(kind: str, pair: dict[str, Path] | None, common: list[str]) -> dict:
    """One measurement in a fresh Python process; its JSON line back."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, *common]
    if pair:
        command += ["--input", str(pair["input"]), "--target", str(pair["target"])]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} measurement failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ one measurement


def measure(args: argparse.Namespace) -> dict:
    """Decode (or, for ``floor``, only set up) in this process; its peak RSS and rows."""
    import torch

    from jingle.datasets.audio import Segmenting
    from jingle.datasets.fusion_preprocess import decode_fusion_pairs, encode_windows
    from jingle.models.codecs import build_codec

    # One thread, as in a Ray decode task (Ray sets OMP_NUM_THREADS=1 for a task that
    # reserves under one CPU); the same for both paths.
    torch.set_num_threads(1)
    codec = build_codec(args.codec, checkpoint=args.codec_checkpoint)
    segmenting = Segmenting(segment_seconds=args.segment_seconds)
    window = round(segmenting.segment_seconds * codec.sample_rate)
    started = time.perf_counter()
    hashes, rows = hashlib.sha256(), 0
    if args.child == "floor":
        silence = np.zeros((WINDOWS_PER_BATCH, window), np.float32)  # [N, S]
        batches = iter([{"input_audio": silence, "target_audio": silence, "reject_reason": np.array([""] * WINDOWS_PER_BATCH, dtype=object)}])
    elif args.child == "streamed":
        item = {"pair_id": ["pair"], "input_path": [args.input], "target_path": [args.target], "fingerprint": [""], "skip": ["[]"]}
        batches = decode_fusion_pairs({key: np.array(value, dtype=object) for key, value in item.items()},
                                      sample_rate=codec.sample_rate, segmenting=segmenting.to_dict())
    else:
        batches = whole_file_decode(args.input, args.target, sample_rate=codec.sample_rate, segmenting=segmenting)
    for batch in batches:
        if batch["reject_reason"].any():
            raise RuntimeError(f"the generated pair was rejected: {batch['reject_reason'][0]}")
        encode_windows(codec, batch, np.dtype("float32"))  # what an encoder actor does with the batch
        for value in batch.get("audio_sha256", ()):
            hashes.update(value.encode())
        rows += len(batch["reject_reason"])
    return {
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "rows": rows,
        "rows_sha256": hashes.hexdigest(),
        "wall_s": time.perf_counter() - started,
    }


def whole_file_decode(input_path: str, target_path: str, *, sample_rate: int, segmenting) -> Iterator[dict[str, np.ndarray]]:
    """The baseline: ``decode_fusion_pairs`` as it was before streaming (one pair, no
    arrangement, nothing skipped), each side held whole at both rates."""
    from jingle.datasets.resampling import resample
    from jingle.datasets.fusion_preprocess import _WINDOWS_PER_BLOCK, _window_hash

    audio = {}
    for role, path in (("input", input_path), ("target", target_path)):
        info = soundfile.info(path)
        mono = np.empty(info.frames, dtype=np.float32)  # [S] at the file's rate
        read = 0
        with soundfile.SoundFile(path) as handle:
            while read < info.frames:
                block = handle.read(min(1 << 18, info.frames - read), dtype="float32", always_2d=True)  # [S, C]
                mono[read : read + len(block)] = block.mean(axis=1)
                read += len(block)
        audio[role] = resample(mono, info.samplerate, sample_rate)
        del mono
    length = min(len(audio["input"]), len(audio["target"]))
    bounds = segmenting.bounds(length, sample_rate)
    window = round(segmenting.segment_seconds * sample_rate)
    for offset in range(0, len(bounds), _WINDOWS_PER_BLOCK):
        spans = bounds[offset : offset + _WINDOWS_PER_BLOCK]
        cut = {role: np.zeros((len(spans), window), dtype=np.float32) for role in audio}  # [N, S] each
        for role in audio:
            for index, (start, end) in enumerate(spans):
                piece = audio[role][start : min(end, len(audio[role]))]
                cut[role][index, : len(piece)] = piece
        yield {
            "audio_sha256": np.array([_window_hash(i, t) for i, t in zip(cut["input"], cut["target"])], dtype=object),
            "reject_reason": np.array([""] * len(spans), dtype=object),
            "input_audio": cut["input"],
            "target_audio": cut["target"],
        }


if __name__ == "__main__":
    sys.exit(main())
