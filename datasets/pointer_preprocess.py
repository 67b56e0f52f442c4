"""Ray Data glue for pointer pairs: raw and edit recordings -> log-mel rows with pointers.

The stages (the shard store, journal, rejects and commit loop are the fusion
preprocessing's, ``datasets/fusion_preprocess.py`` and ``datasets/shards.py``)::

    from_items(work items)                  driver: pair ids, paths, label files
      -> map_batches(featurize_pointer_pairs)   tasks: stream both WAVs into log-mels, pointers
      -> map_batches(write_pointer_shard)       tasks: one Parquet shard per batch
      -> stream_commits on the driver           journal commit per shard

Shape letters: M mel bins, T frames.

One row per pair (segment index 0): an edit points anywhere into its raw recording, so a
pair cannot be cut into independent windows; training crops instead (augmentation B2).
Pointers come, in this order of preference, from ``pointers/<name>.npy``, from
``edl/<name>.json`` (converted at the frame rate), or from the dynamic-programming
alignment (``datasets/alignment.py``) with its per-frame confidence; given labels have
confidence 1. Every row is checked before it is written: as many pointers as edit frames,
each inside the raw recording. A pair that fails becomes a reject with the reason.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import ray

from jingle.datasets.audio import READ_BLOCK_FRAMES, AudioError, stream_mono
from jingle.datasets.features import MelFeatures
from jingle.datasets.pairs import PointerPair
from jingle.datasets.shard_stream import Progress, cap_in_flight, shard_entry, stream_commits
from jingle.datasets.shards import SCHEMA_VERSION, ShardStore, WorkItem, write_shard

LABEL_SOURCES = ("pointers", "edl", "alignment")
# Columns a training reads (the rest describe the row).
TRAINING_COLUMNS = ["raw_mel", "edit_mel", "raw_frames", "edit_frames", "pointers", "confidence"]


class LabelError(ValueError):
    """A pair that cannot become a row (unreadable audio, a bad label file, pointers outside
    the raw); ``path`` is the file to blame in ``rejects.parquet``."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


def features_id(features: MelFeatures) -> str:
    """Names the feature settings in shard file names (rows of other settings differ)."""
    digest = hashlib.sha256(json.dumps(features.to_dict(), sort_keys=True).encode()).hexdigest()[:12]
    return f"logmel-{digest}"


def pointer_schema(features: MelFeatures) -> pa.Schema:
    """Row schema of pointer shards.

    Mels are stored flattened, mel-bin major (``[M, T]`` in C order), with their frame
    counts beside them: the rows' lengths differ, and plain list columns read back
    everywhere (pyarrow, Ray Data, pandas).
    """
    return pa.schema(
        [
            ("pair_id", pa.string()),
            ("segment_index", pa.int32()),
            ("raw_path", pa.string()),
            ("edit_path", pa.string()),
            ("label_source", pa.string()),
            ("sample_rate", pa.int32()),
            ("hop_length", pa.int32()),
            ("frame_rate", pa.float64()),
            ("n_mels", pa.int32()),
            ("raw_frames", pa.int32()),
            ("edit_frames", pa.int32()),
            ("raw_seconds", pa.float64()),
            ("edit_seconds", pa.float64()),
            ("raw_mel", pa.list_(pa.float32())),
            ("edit_mel", pa.list_(pa.float32())),
            ("pointers", pa.list_(pa.int32())),
            ("confidence", pa.list_(pa.float32())),
            ("mean_confidence", pa.float32()),
            ("audio_sha256", pa.string()),
        ],
        metadata={
            "jingle.kind": "pointer",
            "jingle.schema_version": str(SCHEMA_VERSION),
            "jingle.features": json.dumps(features.to_dict(), sort_keys=True),
        },
    )


def row_to_arrays(row: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A stored row (or a row of a numpy batch) -> raw mel [M, T_raw], edit mel [M, T_edit],
    pointers [T_edit] int64 and confidence [T_edit] float32."""
    raw_frames, edit_frames = int(row["raw_frames"]), int(row["edit_frames"])
    raw = np.asarray(row["raw_mel"], dtype=np.float32).reshape(-1, raw_frames)  # [M, T_raw]
    edit = np.asarray(row["edit_mel"], dtype=np.float32).reshape(-1, edit_frames)  # [M, T_edit]
    return raw, edit, np.asarray(row["pointers"], dtype=np.int64), np.asarray(row["confidence"], dtype=np.float32)


# ------------------------------------------------------------------------- labels


def read_pointer_labels(
    pair: PointerPair, *, raw_frames: int, edit_frames: int, frame_rate: float
) -> tuple[np.ndarray, str] | None:
    """Pointers from the pair's label file, checked; None when it has none (align).

    Raises:
        LabelError: unreadable file, wrong length, or a pointer outside the raw recording.
    """
    label_path = pair.pointers_path or pair.edl_path
    if pair.pointers_path:
        try:
            pointers = np.load(pair.pointers_path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise LabelError(f"pointers: not a readable .npy array ({error})", label_path) from None
        if pointers.ndim != 1 or not np.issubdtype(pointers.dtype, np.integer):
            raise LabelError(f"pointers: expected a 1-D integer array, got {pointers.dtype} of shape {pointers.shape}", label_path)
        if len(pointers) != edit_frames:
            raise LabelError(f"pointers: {len(pointers)} values for {edit_frames} edit frames (one raw frame index per edit frame)", label_path)
        source = "pointers"
    elif pair.edl_path:
        from jingle.datasets.alignment import pointers_from_edl

        try:
            segments = json.loads(Path(pair.edl_path).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise LabelError(f"edl: not readable JSON ({error})", label_path) from None
        if not isinstance(segments, list) or not all(
            isinstance(s, (list, tuple)) and len(s) == 2 and all(isinstance(v, (int, float)) for v in s) for s in segments
        ):
            raise LabelError("edl: expected a list of [raw_start_s, raw_end_s] pairs", label_path)
        raw_seconds = raw_frames / frame_rate
        for index, (start, end) in enumerate(segments):
            if not 0 <= start < end or end > raw_seconds + 1.0 / frame_rate:
                raise LabelError(f"edl: segment {index} [{start}, {end}] is not inside the raw recording (0 to {raw_seconds:.3f} s)", label_path)
        try:
            pointers = pointers_from_edl(segments, frame_rate, edit_frames)
        except ValueError as error:
            raise LabelError(f"edl: {error}", label_path) from None
        source = "edl"
    else:
        return None
    pointers = pointers.astype(np.int64)
    outside = (pointers < 0) | (pointers >= raw_frames)
    if outside.any():
        raise LabelError(
            f"{source}: {int(outside.sum())} pointers outside the raw recording's {raw_frames} frames "
            f"(range {int(pointers.min())}..{int(pointers.max())})",
            label_path,
        )
    return pointers, source


def check_row(raw_frames: int, edit_frames: int, pointers: np.ndarray) -> None:
    """The invariant of every written row (a failure here is a bug, not bad input)."""
    if len(pointers) != edit_frames:
        raise AssertionError(f"{len(pointers)} pointers for {edit_frames} edit frames")
    if edit_frames and (pointers.min() < 0 or pointers.max() >= raw_frames):
        raise AssertionError(f"pointers {pointers.min()}..{pointers.max()} outside {raw_frames} raw frames")


# ------------------------------------------------------------------------- stages


_COLUMNS = (
    "pair_id", "segment_index", "segments_total", "raw_path", "edit_path", "fingerprint", "label_source",
    "raw_frames", "edit_frames", "raw_seconds", "edit_seconds", "raw_mel", "edit_mel", "pointers", "confidence",
    "mean_confidence", "audio_sha256", "reject_reason", "reject_path", "reject_stage",
)


def featurize_pointer_pairs(
    batch: dict[str, np.ndarray], *, features: dict, alignment: dict, block_frames: int = READ_BLOCK_FRAMES
) -> dict[str, np.ndarray]:
    """Task: read each pair, compute both log-mels and the pointers (one row per pair).

    The recordings are read ``block_frames`` file frames at a time and their log-mels
    made a chunk at a time (``streamed_log_mel``): audio is never held whole, the mels
    (and the alignment, when there are no labels) are.
    """
    from jingle.datasets.alignment import AlignmentConfig, align

    mel = MelFeatures(**features)
    rows = []
    for index in range(len(batch["pair_id"])):
        pair = PointerPair(
            str(batch["pair_id"][index]),
            str(batch["raw_path"][index]),
            str(batch["edit_path"][index]),
            str(batch["pointers_path"][index]) or None,
            str(batch["edl_path"][index]) or None,
        )
        row = {key: None for key in _COLUMNS}
        row.update(pair_id=pair.pair_id, segment_index=0, segments_total=1, raw_path=pair.raw_path,
                   edit_path=pair.edit_path, fingerprint=str(batch["fingerprint"][index]),
                   reject_reason="", reject_path="", reject_stage="")
        try:
            digest = hashlib.sha256()  # of the raw's samples, then the edit's
            mels, samples = {}, {}
            for role, path in (("raw", pair.raw_path), ("edit", pair.edit_path)):
                blocks = _hashed(stream_mono(path, mel.sample_rate, block_frames=block_frames), digest)
                try:
                    mels[role], samples[role] = streamed_log_mel(blocks, mel)
                except AudioError as error:
                    raise LabelError(f"{role}: {error}", path) from None
            raw_mel, edit_mel = mels["raw"], mels["edit"]  # [M, T]
            labels = read_pointer_labels(pair, raw_frames=raw_mel.shape[1], edit_frames=edit_mel.shape[1], frame_rate=mel.frame_rate)
            if labels is None:
                found = align(raw_mel, edit_mel, AlignmentConfig(**alignment))
                pointers, confidence, source = found.pointers.astype(np.int64), found.confidence.astype(np.float32), "alignment"
            else:
                pointers, source = labels
                confidence = np.ones(len(pointers), dtype=np.float32)
            check_row(raw_mel.shape[1], edit_mel.shape[1], pointers)
        except LabelError as error:
            row.update(reject_reason=str(error), reject_path=error.path, reject_stage="decode")
            rows.append(row)
            continue
        row.update(
            label_source=source,
            raw_frames=raw_mel.shape[1],
            edit_frames=edit_mel.shape[1],
            raw_seconds=samples["raw"] / mel.sample_rate,
            edit_seconds=samples["edit"] / mel.sample_rate,
            raw_mel=raw_mel.reshape(-1),
            edit_mel=edit_mel.reshape(-1),
            pointers=pointers.astype(np.int32),
            confidence=confidence,
            mean_confidence=float(confidence.mean()) if len(confidence) else 1.0,
            audio_sha256=digest.hexdigest()[:32],
        )
        rows.append(row)
    return _to_batch(rows)


# Audio samples a log-mel is computed on at a time (16 s at 16 kHz), besides its context.
_MEL_CHUNK_SAMPLES = 1 << 18


def streamed_log_mel(
    blocks: Iterable[np.ndarray], mel: MelFeatures, *, chunk_samples: int = _MEL_CHUNK_SAMPLES
) -> tuple[np.ndarray, int]:
    """``mel.log_mel`` of audio that arrives in blocks, made a chunk at a time: the same
    frames, holding a chunk of audio rather than the recording.

    Frame t's STFT window covers samples [t * hop - n_fft // 2, t * hop - n_fft // 2 + n_fft),
    reflected at the recording's two ends. A chunk that starts a whole number of hops
    before the first frame not yet made gives, exactly, the frames whose windows lie
    inside it; the others wait for the next chunk. The first chunk starts at the
    recording's start and the last ends at its end, so their reflections are the whole
    recording's.

    Args:
        blocks: [S_block] float32 mono at ``mel.sample_rate``, in order.
        mel: the features.
        chunk_samples: audio gathered before a chunk's frames are made (at least n_fft).
    Returns:
        ([M, T] float32 log-mel, S samples received).
    """
    if chunk_samples < mel.n_fft:
        raise ValueError(f"chunk_samples must be at least n_fft ({mel.n_fft}), got {chunk_samples}")
    hop = mel.hop_length
    reach_before, reach_after = mel.n_fft // 2, mel.n_fft - mel.n_fft // 2  # a window around its frame's sample
    # Hops of audio kept before the next frame to make: its window's reach, and one more
    # so that the last chunk is always longer than the reflection at its end.
    context_hops = -(-reach_before // hop) + 1
    held = [np.zeros(0, dtype=np.float32)]  # samples [held_start, received), as they came
    held_start = received = made = 0  # held_start: a multiple of hop
    pieces = []  # [M, T_chunk] each
    for block in blocks:
        held.append(block)
        received += len(block)
        last = (received - reach_after) // hop  # the last frame whose window has all arrived
        if received - held_start < chunk_samples or last < made:
            continue
        chunk = np.concatenate(held)
        frames = mel.log_mel(chunk)  # [M, T_chunk]: frame k is the recording's frame held_start / hop + k
        pieces.append(frames[:, made - held_start // hop : last + 1 - held_start // hop])
        made = last + 1
        keep = max(0, (made - context_hops) * hop)
        held, held_start = [chunk[keep - held_start :]], keep
    frames = mel.log_mel(np.concatenate(held))
    pieces.append(frames[:, made - held_start // hop :])
    return np.concatenate(pieces, axis=1), received  # [M, T]


def _hashed(blocks: Iterable[np.ndarray], digest) -> Iterator[np.ndarray]:
    """The blocks, each added to ``digest`` as it passes."""
    for block in blocks:
        digest.update(block.tobytes())
        yield block


_ARRAY_DTYPES = {"raw_mel": np.float32, "edit_mel": np.float32, "pointers": np.int32, "confidence": np.float32}


def _to_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows -> a numpy batch; the ragged arrays travel as numpy arrays (Ray Data carries
    them as tensors of variable shape), an empty one for a reject."""
    batch = {}
    for key in _COLUMNS:
        values = [row[key] for row in rows]
        if key in _ARRAY_DTYPES:
            column = np.empty(len(values), dtype=object)
            for index, value in enumerate(values):
                column[index] = np.zeros(0, _ARRAY_DTYPES[key]) if value is None else value
            batch[key] = column
        elif key in ("raw_frames", "edit_frames", "segment_index", "segments_total"):
            batch[key] = np.array([value or 0 for value in values], dtype=np.int32)
        elif key in ("raw_seconds", "edit_seconds", "mean_confidence"):
            batch[key] = np.array([value or 0.0 for value in values], dtype=np.float64)
        else:
            batch[key] = np.array([value or "" for value in values], dtype=object)
    return batch


def write_pointer_shard(batch: dict[str, np.ndarray], *, out_dir: str, features: dict) -> dict[str, np.ndarray]:
    """Task: write one batch of featurized rows as a shard; return its commit record."""
    mel = MelFeatures(**features)
    good = batch["reject_reason"] == ""
    rows = {key: value[good] for key, value in batch.items()}
    written, keys = None, []
    if good.any():
        count = int(good.sum())
        for raw_frames, edit_frames, pointers in zip(rows["raw_frames"], rows["edit_frames"], rows["pointers"]):
            check_row(int(raw_frames), int(edit_frames), np.asarray(pointers))
        table = pa.table(
            {
                "pair_id": pa.array(rows["pair_id"].astype(str)),
                "segment_index": pa.array(rows["segment_index"], pa.int32()),
                "raw_path": pa.array(rows["raw_path"].astype(str)),
                "edit_path": pa.array(rows["edit_path"].astype(str)),
                "label_source": pa.array(rows["label_source"].astype(str)),
                "sample_rate": pa.array([mel.sample_rate] * count, pa.int32()),
                "hop_length": pa.array([mel.hop_length] * count, pa.int32()),
                "frame_rate": pa.array([mel.frame_rate] * count, pa.float64()),
                "n_mels": pa.array([mel.n_mels] * count, pa.int32()),
                "raw_frames": pa.array(rows["raw_frames"], pa.int32()),
                "edit_frames": pa.array(rows["edit_frames"], pa.int32()),
                "raw_seconds": pa.array(rows["raw_seconds"], pa.float64()),
                "edit_seconds": pa.array(rows["edit_seconds"], pa.float64()),
                "raw_mel": pa.array([np.asarray(v, np.float32) for v in rows["raw_mel"]], pa.list_(pa.float32())),
                "edit_mel": pa.array([np.asarray(v, np.float32) for v in rows["edit_mel"]], pa.list_(pa.float32())),
                "pointers": pa.array([np.asarray(v, np.int32) for v in rows["pointers"]], pa.list_(pa.int32())),
                "confidence": pa.array([np.asarray(v, np.float32) for v in rows["confidence"]], pa.list_(pa.float32())),
                "mean_confidence": pa.array(rows["mean_confidence"], pa.float32()),
                "audio_sha256": pa.array(rows["audio_sha256"].astype(str)),
            },
            schema=pointer_schema(mel),
        )
        keys = [(str(p), int(i)) for p, i in zip(rows["pair_id"], rows["segment_index"])]
        written = write_shard(out_dir, table, keys, features_id(mel))
    audio_seconds = float(np.sum(rows["raw_seconds"]) + np.sum(rows["edit_seconds"]))
    entry = shard_entry(batch, written=written, keys=keys, audio_seconds=audio_seconds)
    return {"entry": np.array([json.dumps(entry)], dtype=object)}


def run_pointer_pipeline(
    *,
    store: ShardStore,
    work: list[WorkItem],
    pairs: dict[str, PointerPair],
    features: MelFeatures,
    alignment: dict,
    rows_per_shard: int,
    featurize_tasks: int,
    on_progress: Callable[[Progress], None] = lambda progress: None,
) -> Progress:
    """Stream ``work`` through featurize and write; commit each shard as it lands."""
    progress = Progress(pairs_total=len(work))
    if not work:
        return progress
    items = [
        {
            "pair_id": item.item_id,
            "raw_path": pairs[item.item_id].raw_path,
            "edit_path": pairs[item.item_id].edit_path,
            "pointers_path": pairs[item.item_id].pointers_path or "",
            "edl_path": pairs[item.item_id].edl_path or "",
            "fingerprint": item.fingerprint,
        }
        for item in work
    ]
    dataset = (
        ray.data.from_items(items, override_num_blocks=min(len(items), 10_000))
        .map_batches(
            featurize_pointer_pairs,
            batch_size=1,
            fn_kwargs={"features": features.to_dict(), "alignment": alignment},
            compute=ray.data.TaskPoolStrategy(size=max(1, min(featurize_tasks, len(items)))),
            num_cpus=1,
        )
        .map_batches(
            write_pointer_shard,
            batch_size=rows_per_shard,
            fn_kwargs={"out_dir": str(store.root), "features": features.to_dict()},
            compute=ray.data.TaskPoolStrategy(size=max(1, min(featurize_tasks, len(items)) // 2)),
            num_cpus=0.25,
        )
    )
    # A featurized pair of a few minutes is a few MB, so the smallest cap (cap_in_flight's
    # floor) holds many per task: memory stays flat however large the corpus.
    cap_in_flight(dataset, 0)
    return stream_commits(dataset, store, progress, on_progress)
