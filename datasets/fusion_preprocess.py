"""Ray Data glue for fusion preprocessing: decode as tasks, encode in an actor pool, write shards.

The stages, each streaming into the next (nothing is collected on the driver but one
small commit record per shard written)::

    from_items(work items)                      driver: pair ids, paths, segments to skip
      -> map_batches(decode_fusion_pairs)       tasks: check, then stream, resample, cut windows
      -> map_batches(SegmentEncoder)            actor pool: codec loaded once per actor
      -> map_batches(write_fusion_shard)        tasks: one Parquet shard per batch
      -> iter_rows() on the driver              journal commit per shard

Decoding streams: a task holds a few blocks of each file and a block of windows, never a
recording, so its memory does not grow with the recordings' length. A file that fails in
decode becomes a row with ``reject_reason`` set (its audio columns are zeros and are never
encoded), so bad files travel with the stream to the driver's commit instead of raising.
Column names ending in ``_audio`` hold [N, S] float32 windows.

The encoder adds an ``encoded_on`` column (the Ray node id of the actor that encoded each
row); the writer turns it into the shard's journal entry (``encoded_on``: node ids) and
leaves it out of the Parquet rows, whose schema is a contract.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import ray
import torch

from jingle.datasets.audio import READ_BLOCK_FRAMES, AudioError, Segmenting, check_mono, cut_stream, stream_mono
from jingle.datasets.resampling import resampled_length
from jingle.datasets.pairs import Reject
from jingle.datasets.shard_stream import Progress, cap_in_flight, shard_entry, stream_commits
from jingle.datasets.shards import ShardStore, WorkItem, fusion_schema, write_shard
from jingle.models.codecs import build_codec

# What an encoder process holds besides its activations (torch, codec weights, buffers).
_ENCODER_BASE_BYTES = 600 * 1024 * 1024

# Decoded windows allowed in the object store at once: enough to feed every encoder actor.
_BATCHES_IN_FLIGHT = 8

# Decode output blocks hold at most this many windows (16 s at 24 kHz, both sides:
# 8 windows are ~25 MB), so a long recording streams instead of forming one huge block.
_WINDOWS_PER_BLOCK = 8


def decode_fusion_pairs(
    batch: dict[str, np.ndarray],
    *,
    sample_rate: int,
    segmenting: dict,
    arrangements: bool = False,
    block_frames: int = READ_BLOCK_FRAMES,
) -> Iterator[dict[str, np.ndarray]]:
    """Read each pair of the batch and cut both sides into aligned windows.

    With ``arrangements``, a pair's reference arrangement (``arrangement_path``, may be
    empty) is cut into the same windows (zeros past its end, and where it has none, with
    ``has_arrangement`` false). Yields batches with one row per window (or one reject row
    per failed pair).

    Every file is read twice, ``block_frames`` frames at a time, and never held whole:
    first checked to its end (truncation, NaN/Inf and silence show only there, and a
    rejected pair must not have sent windows on to be written), then its roles are read
    side by side and cut as the audio comes. A task holds a few blocks and
    ``_WINDOWS_PER_BLOCK`` windows per role, whatever the recordings' length.
    """
    cutter = Segmenting(**segmenting)
    window = round(cutter.segment_seconds * sample_rate)
    for row in range(len(batch["pair_id"])):
        pair_id = str(batch["pair_id"][row])
        paths = {"input": str(batch["input_path"][row]), "target": str(batch["target_path"][row])}
        if arrangements and str(batch["arrangement_path"][row]):
            paths["arrangement"] = str(batch["arrangement_path"][row])
        skip = set(json.loads(str(batch["skip"][row])))
        infos = {}
        failure = None
        for role, path in paths.items():
            try:
                infos[role] = check_mono(path, block_frames=block_frames)
            except AudioError as error:
                failure = Reject(pair_id, path, f"{role}: {error}", "decode")
                break
        if failure is None:
            # the length each side has once resampled, known from its header
            length = min(resampled_length(infos[role].frames, infos[role].sample_rate, sample_rate) for role in ("input", "target"))
            bounds = cutter.bounds(length, sample_rate)
            if not bounds:
                failure = Reject(pair_id, paths["input"], f"shorter than one segment after resampling ({length / sample_rate:.2f} s)", "decode")
        if failure is not None:
            yield _reject_rows(batch, row, failure, window, arrangements=arrangements)
            continue
        todo = [(index, span) for index, span in enumerate(bounds) if index not in skip]
        streams = {role: stream_mono(path, sample_rate, info=infos[role], block_frames=block_frames) for role, path in paths.items()}
        windows = {role: cut_stream(stream, [span for _, span in todo]) for role, stream in streams.items()}
        try:
            for offset in range(0, len(todo), _WINDOWS_PER_BLOCK):
                chunk = todo[offset : offset + _WINDOWS_PER_BLOCK]
                cut, failure = _next_windows(windows, len(chunk), pair_id, paths)
                if failure is not None:
                    # The file passed its check and fails now, so it changed in between;
                    # its new fingerprint makes the next run read the pair again.
                    yield _reject_rows(batch, row, failure, window, arrangements=arrangements)
                    break
                yield _window_rows(batch, row, chunk, cut, paths, len(bounds), length, sample_rate, arrangements=arrangements)
        finally:
            for stream in streams.values():
                stream.close()


def _next_windows(
    windows: dict[str, Iterator[np.ndarray]], count: int, pair_id: str, paths: dict[str, str]
) -> tuple[dict[str, np.ndarray], Reject | None]:
    """The next ``count`` windows of every role, [N, S] each, taken role after role (so the
    files are read side by side); or the reject of the role whose file failed."""
    cut = {}
    for role, stream in windows.items():
        try:
            cut[role] = np.stack([next(stream) for _ in range(count)])  # [N, S]
        except AudioError as error:
            return cut, Reject(pair_id, paths[role], f"{role}: {error}", "decode")
    return cut, None


def _window_rows(
    batch: dict, row: int, chunk: list[tuple[int, tuple[int, int]]], cut: dict[str, np.ndarray], paths: dict[str, str],
    segments_total: int, length: int, sample_rate: int, *, arrangements: bool,
) -> dict[str, np.ndarray]:
    """The rows of one block of a pair's windows: ``chunk`` (segment index, span) pairs and
    each role's [N, S] windows of them."""
    pair_id = str(batch["pair_id"][row])
    count = len(chunk)
    extra = {}
    if arrangements:
        has = "arrangement" in cut
        extra["arrangement_audio"] = cut["arrangement"] if has else np.zeros_like(cut["input"])
        extra["has_arrangement"] = np.full(count, has)
    return {
        "pair_id": np.array([pair_id] * count, dtype=object),
        "segment_index": np.array([index for index, _ in chunk], dtype=np.int32),
        "segments_total": np.full(count, segments_total, dtype=np.int32),
        "input_path": np.array([paths["input"]] * count, dtype=object),
        "target_path": np.array([paths["target"]] * count, dtype=object),
        "fingerprint": np.array([str(batch["fingerprint"][row])] * count, dtype=object),
        "start_s": np.array([start / sample_rate for _, (start, _) in chunk]),
        "end_s": np.array([min(end, length) / sample_rate for _, (_, end) in chunk]),
        "audio_sha256": np.array([_window_hash(i, t) for i, t in zip(cut["input"], cut["target"])], dtype=object),
        "reject_reason": np.array([""] * count, dtype=object),
        "reject_path": np.array([""] * count, dtype=object),
        "reject_stage": np.array([""] * count, dtype=object),
        "input_audio": cut["input"],
        "target_audio": cut["target"],
        **extra,
    }


def _window_hash(input_window: np.ndarray, target_window: np.ndarray) -> str:
    digest = hashlib.sha256(input_window.tobytes())
    digest.update(target_window.tobytes())
    return digest.hexdigest()[:32]


def _reject_rows(batch: dict, row: int, reject: Reject, window: int, *, arrangements: bool = False) -> dict[str, np.ndarray]:
    extra = {"arrangement_audio": np.zeros((1, window), dtype=np.float32), "has_arrangement": np.zeros(1, bool)} if arrangements else {}
    return {
        "pair_id": np.array([reject.pair_id], dtype=object),
        "segment_index": np.array([-1], dtype=np.int32),
        "segments_total": np.array([0], dtype=np.int32),
        "input_path": np.array([str(batch["input_path"][row])], dtype=object),
        "target_path": np.array([str(batch["target_path"][row])], dtype=object),
        "fingerprint": np.array([str(batch["fingerprint"][row])], dtype=object),
        "start_s": np.zeros(1),
        "end_s": np.zeros(1),
        "audio_sha256": np.array([""], dtype=object),
        "reject_reason": np.array([reject.reason], dtype=object),
        "reject_path": np.array([reject.path], dtype=object),
        "reject_stage": np.array([reject.stage], dtype=object),
        "input_audio": np.zeros((1, window), dtype=np.float32),
        "target_audio": np.zeros((1, window), dtype=np.float32),
        **extra,
    }


def encode_windows(codec, batch: dict[str, np.ndarray], latent_dtype: np.dtype, device: str = "cpu") -> dict[str, np.ndarray]:
    """Replace a batch's ``*_audio`` windows (input, target, and arrangement when present)
    with ``*_latent`` frames (no Ray involved).

    Every role's windows go through the codec in one call; reject rows get zeros, and a
    row without an arrangement (``has_arrangement`` false) the codec's silence.
    """
    good = batch["reject_reason"] == ""
    count, window = batch["input_audio"].shape
    frames = codec.frames_for(window)
    roles = [role for role in ("input", "target", "arrangement") if f"{role}_audio" in batch]
    latents = {role: np.zeros((count, codec.dim, frames), dtype=latent_dtype) for role in roles}
    if good.any():
        audio = np.concatenate([batch[f"{role}_audio"][good] for role in roles])  # [R*N, S]
        with torch.inference_mode():
            encoded = codec.encode(torch.from_numpy(audio).to(device)[:, None])  # [R*N, D, T]
        encoded = encoded.float().cpu().numpy().astype(latent_dtype)
        size = int(good.sum())
        for index, role in enumerate(roles):
            latents[role][good] = encoded[index * size : (index + 1) * size]
    if "arrangement" in latents:
        missing = ~np.asarray(batch["has_arrangement"], dtype=bool)
        latents["arrangement"][missing] = codec.silence_latent().float().cpu().numpy().astype(latent_dtype)[:, None]
    out = {key: value for key, value in batch.items() if not key.endswith("_audio")}
    for role in roles:
        out[f"{role}_latent"] = latents[role]
    return out


class SegmentEncoder:
    """Actor: loads the codec once and runs ``encode_windows`` on every batch, marking each
    row with the node it was encoded on (an actor restarted elsewhere marks its new node).

    Args:
        codec_name: registry name.
        codec_id: the id the driver computed; a worker whose codec differs refuses.
        state: ``[ObjectRef]`` of the codec weights (None for weight-free codecs),
            shipped through the object store so that every node gets the same weights.
        latent_dtype: ``"float32"`` or ``"float16"``.
        threads: torch intra-op threads for this actor.
    """

    def __init__(self, *, codec_name: str, codec_id: str, state: list | None, latent_dtype: str, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        weights = ray.get(state[0]) if state else None
        self.device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        self.codec = build_codec(codec_name, state=weights).to(self.device)
        if self.codec.id != codec_id:
            raise RuntimeError(f"worker built codec {self.codec.id}, driver expected {codec_id}")
        self.dtype = np.dtype(latent_dtype)
        self.node_id = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = encode_windows(self.codec, batch, self.dtype, self.device)
        out["encoded_on"] = np.array([self.node_id] * len(batch["pair_id"]), dtype=object)
        return out


def write_fusion_shard(
    batch: dict[str, np.ndarray], *, out_dir: str, schema: pa.Schema, codec_id: str, sample_rate: int, frame_rate: float
) -> dict[str, np.ndarray]:
    """Task: write one batch of encoded rows as a shard; return its commit record."""
    good = batch["reject_reason"] == ""
    rows = {key: value[good] for key, value in batch.items()}
    written, keys = None, []
    if good.any():
        count = int(good.sum())
        latent_type = schema.field("input_latent").type
        table = pa.table(
            {
                "pair_id": pa.array(rows["pair_id"].astype(str)),
                "segment_index": pa.array(rows["segment_index"], pa.int32()),
                "input_path": pa.array(rows["input_path"].astype(str)),
                "target_path": pa.array(rows["target_path"].astype(str)),
                "start_s": pa.array(rows["start_s"], pa.float64()),
                "end_s": pa.array(rows["end_s"], pa.float64()),
                "codec_id": pa.array([codec_id] * count),
                "sample_rate": pa.array([sample_rate] * count, pa.int32()),
                "frame_rate": pa.array([frame_rate] * count, pa.float64()),
                "audio_sha256": pa.array(rows["audio_sha256"].astype(str)),
                "input_latent": _tensor_array(rows["input_latent"], latent_type),
                "target_latent": _tensor_array(rows["target_latent"], latent_type),
                **({
                    "arrangement_latent": _tensor_array(rows["arrangement_latent"], latent_type),
                    "has_arrangement": pa.array(rows["has_arrangement"].astype(bool), pa.bool_()),
                } if "arrangement_latent" in schema.names else {}),
            },
            schema=schema,
        )
        keys = [(str(p), int(i)) for p, i in zip(rows["pair_id"], rows["segment_index"])]
        written = write_shard(out_dir, table, keys, codec_id)
    audio_seconds = float(np.sum(rows["end_s"] - rows["start_s"]))
    # Batches encoded outside an actor (bench/preprocess.py's in-process loop) carry no node.
    entry = shard_entry(batch, written=written, keys=keys, audio_seconds=audio_seconds, encoded_on=rows.get("encoded_on", ()))
    return {"entry": np.array([json.dumps(entry)], dtype=object)}


def _tensor_array(values: np.ndarray, latent_type: pa.DataType) -> pa.Array:
    array = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(values))
    if array.type != latent_type:
        raise ValueError(f"latents of type {array.type} do not match the shard schema's {latent_type}")
    return array


# --------------------------------------------------------------------- resources


@dataclass(frozen=True)
class Resources:
    """How the stages share the cluster.

    Logical CPU shares, not thread counts. On CPU the encoder actors together reserve all
    but half a CPU of every node (an actor's share must fit on one node) and run
    ``encoder_threads`` torch threads each; the half CPU is what decode and write tasks,
    light and mostly waiting on I/O, run on.

    Decode and write reserve no CPU (their task pools bound how many run): a stage that
    reserves CPU can be left with no node to run on. When a node is lost, Ray Data restarts
    its encoders (the pool is fixed) wherever their shares fit; on a head and one worker of
    1 CPU each, losing the worker put both encoders (0.5 CPU each) on the head, which then
    had no 0.25 CPU left for a decode or a write task, and the run hung. A request unlike
    the encoder's matters too: Ray Data fuses a task stage into the next actor stage when
    their resource requests match, and decoding would then run inside the encoder actor
    instead of overlapping with it.
    """

    encoder_actors: int
    encoder_threads: int
    encoder_cpus: float
    encoder_gpus: float
    encode_batch: int
    decode_cpus: float = 0.0
    write_cpus: float = 0.0

    @classmethod
    def for_cluster(cls, *, actors: int | None, threads: int | None, encode_batch: int | None) -> "Resources":
        gpus = int(ray.cluster_resources().get("GPU", 0))
        node_cpus = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node["Alive"]]
        return cls.for_nodes(node_cpus, gpus=gpus, actors=actors, threads=threads, encode_batch=encode_batch)

    @classmethod
    def for_nodes(
        cls, node_cpus: list[int], *, gpus: int = 0, actors: int | None = None, threads: int | None = None,
        encode_batch: int | None = None,
    ) -> "Resources":
        """The shares for a cluster whose alive nodes have ``node_cpus`` CPUs (and ``gpus``
        GPUs in all); ``actors``, ``threads`` and ``encode_batch`` override the defaults."""
        if gpus:
            return cls(actors or gpus, threads or 2, 1.0, 1.0, encode_batch or 16)
        node_cpus = [cpus for cpus in node_cpus if cpus > 0] or [1]
        # Two threads per actor: measured on 2 cores, one 2-thread actor encoded EnCodec
        # 30% faster than two 1-thread actors.
        threads = threads or min(2, max(node_cpus))
        # as many actors as the nodes hold whole (an actor cannot span two 1-CPU nodes)
        actors = actors or max(1, sum(cpus // threads for cpus in node_cpus))
        spare = 0.5 * len(node_cpus)  # half a CPU of every node for decode and write
        share = round(max(0.3, min(float(threads), (sum(node_cpus) - spare) / actors)), 2)
        return cls(actors, threads, share, 0.0, encode_batch or 4)


def run_fusion_pipeline(
    *,
    store: ShardStore,
    work: list[WorkItem],
    pairs: dict,
    codec_name: str,
    codec,
    segmenting: Segmenting,
    latent_dtype: str,
    rows_per_shard: int,
    resources: Resources,
    on_progress: Callable[[Progress], None] = lambda progress: None,
    arrangements: bool = False,
) -> Progress:
    """Stream ``work`` through decode, encode and write; commit each shard as it lands.
    With ``arrangements``, the shards hold the pairs' reference arrangements too."""
    progress = Progress(pairs_total=len(work))
    if not work:
        return progress
    frames = codec.frames_for_seconds(segmenting.segment_seconds)
    schema = fusion_schema(dim=codec.dim, frames=frames, latent_dtype=latent_dtype, codec_id=codec.id, arrangements=arrangements)
    weights = codec.worker_state()
    state = [ray.put(dict(weights))] if weights is not None else None
    items = [
        {
            "pair_id": item.item_id,
            "input_path": pairs[item.item_id].input_path,
            "target_path": pairs[item.item_id].target_path,
            "arrangement_path": pairs[item.item_id].arrangement_path or "",
            "fingerprint": item.fingerprint,
            "skip": json.dumps(list(item.skip)),
        }
        for item in work
    ]
    dataset = (
        ray.data.from_items(items, override_num_blocks=min(len(items), 10_000))
        .map_batches(
            decode_fusion_pairs,
            batch_size=1,
            fn_kwargs={"sample_rate": codec.sample_rate, "segmenting": segmenting.to_dict(), "arrangements": arrangements},
            # Each task worker imports torch (~0.6 GB); decoding is a few percent of the
            # encoder's work, so one decode task per actor keeps it fed and memory flat.
            compute=ray.data.TaskPoolStrategy(size=resources.encoder_actors),
            num_cpus=resources.decode_cpus,
        )
        .map_batches(
            SegmentEncoder,
            batch_size=resources.encode_batch,
            # A fixed pool (one actor per pair for a run of fewer pairs): an autoscaled
            # pool (1..N) shrank to one actor while decoding was still filling the queue,
            # leaving the other nodes idle, and every regrown actor loads torch and the
            # codec again (~0.6 GB, tens of seconds on a busy CPU).
            compute=ray.data.ActorPoolStrategy(size=min(resources.encoder_actors, len(items))),
            fn_constructor_kwargs={
                "codec_name": codec_name,
                "codec_id": codec.id,
                "state": state,
                "latent_dtype": latent_dtype,
                "threads": resources.encoder_threads,
            },
            num_cpus=resources.encoder_cpus,
            num_gpus=resources.encoder_gpus,
            # what one actor needs, so that Ray does not pack more actors on a node than fit
            memory=_ENCODER_BASE_BYTES
            + codec.encode_bytes_per_sample * (3 if arrangements else 2) * resources.encode_batch
            * round(segmenting.segment_seconds * codec.sample_rate),
        )
        .map_batches(
            write_fusion_shard,
            batch_size=rows_per_shard,
            fn_kwargs={
                "out_dir": str(store.root),
                "schema": schema,
                "codec_id": codec.id,
                "sample_rate": codec.sample_rate,
                "frame_rate": codec.frame_rate,
            },
            compute=ray.data.TaskPoolStrategy(size=resources.encoder_actors),
            num_cpus=resources.write_cpus,
        )
    )
    # Without a cap Ray Data lets decoded audio queue in the object store up to its default
    # budget (30% of RAM), so a larger corpus would take more memory; a few batches per
    # encoder actor are enough to keep it busy.
    window_bytes = (3 if arrangements else 2) * 4 * round(segmenting.segment_seconds * codec.sample_rate)  # every role, float32
    cap_in_flight(dataset, _BATCHES_IN_FLIGHT * resources.encoder_actors * resources.encode_batch * window_bytes)
    return stream_commits(dataset, store, progress, on_progress)
