"""``jingle fuse``: fuse an input and a target WAV with a trained fusion model.

    python -m pipelines.fuse --checkpoint CKPT INPUT.wav TARGET.wav -o OUT.wav [--pair best|mean|N]
    python -m pipelines.fuse --checkpoint CKPT --batch PAIRS_DIR --out DIR

Writes OUT.wav (mono float at the codec's rate, scaled down to a 0.99 peak when the model
writes louder), OUT.png (envelopes and spectrograms of input, target and output) and
OUT.json (envelope correlations, novelty, component weights, the gain applied, the adaptive
agent's windows and each chunk's per-pair novelty). ``--batch`` fuses every pair of a folder or
manifest through Ray Data into ``DIR/<pair_id>.wav/.png/.json``.

This module is the command line and the Ray Data glue; how a pair is cut into chunks,
fused and reported (and what ``--pair`` chooses) is ``pipelines/fusion_inference.py``.

``--batch`` runs on a cluster: the checkpoint, the pairs and ``--out`` must be on storage
every node reads at the same path (shared storage: NFS, a mounted bucket); codec weights
travel through the object store.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from jingle.core.storage import Location, check_writable, is_remote, upload_files
from jingle.datasets.audio import AudioError
from jingle.datasets.pairs import InputError, discover_fusion_pairs
from jingle.pipelines.common import (
    EntryPoint,
    UsageError,
    add_codec_checkpoint_argument,
    add_common_arguments,
    add_model_device_argument,
    local_device,
)
from jingle.pipelines.fusion_inference import (
    PAIR_MODES,
    PairMode,
    check_pair_mode,
    fuse_pair,
    load_fusion_checkpoint,
    output_paths,
    probe_source,
)

from jingle.pipelines.run_spec import EvaluateFusionSpec, FuseSpec, FusingSpec, spec_from_args

PROG = "jingle fuse"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="fusion checkpoint (a directory with state.pt, or the file)")
    parser.add_argument("input", nargs="?", metavar="INPUT.wav", help="the input (e.g. drums)")
    parser.add_argument("target", nargs="?", metavar="TARGET.wav", help="the target (e.g. piano)")
    parser.add_argument("-o", "--output", metavar="OUT.wav", help="fused audio; OUT.png and OUT.json are written beside it")
    parser.add_argument("--batch", metavar="PAIRS_DIR", help="fuse every pair of a folder (input/, target/) or CSV/JSONL manifest")
    parser.add_argument("--out", metavar="DIR", help="with --batch: folder for <pair_id>.wav/.png/.json")
    add_codec_checkpoint_argument(parser)
    parser.add_argument(
        "--pair",
        type=parse_pair_mode,
        default="best",
        metavar="best|mean|N",
        help="adaptive window agent: which window pair to keep per chunk: best (lowest novelty loss), mean, or an index (default: best)",
    )
    add_model_device_argument(parser)
    parser.add_argument("--actors", type=int, default=None, metavar="N", help="with --batch: fusion actors at most (default: 1 per GPU, or CPUs/2)")
    add_common_arguments(parser)


def parse_pair_mode(text: str) -> PairMode:
    if text in PAIR_MODES:
        return text
    try:
        index = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be best, mean or a pair index, got {text!r}") from None
    if index < 0:
        raise argparse.ArgumentTypeError(f"a pair index must be 0 or more, got {index}")
    return index


# ------------------------------------------------------------------ command


def command(spec: FuseSpec) -> int:
    if spec.batch is not None:
        return run_batch(spec)
    for role, path in (("input", spec.input), ("target", spec.target)):
        if Path(path).resolve() == Path(spec.output).resolve():
            raise UsageError(f"-o {spec.output} would overwrite the {role}: choose another output file")
        probe_source(path, role)  # headers only: a wrong file name costs no model load
    device = local_device(spec.device)
    loaded = load_fusion_checkpoint(spec.checkpoint, codec_checkpoint=spec.codec_checkpoint, device=device)
    try:
        check_pair_mode(spec.pair, loaded.model.config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    report = fuse_pair(
        loaded.model,
        loaded.codec,
        spec.input,
        spec.target,
        spec.output,
        spec.pair,
        loaded.segment_seconds,
        device,
        provenance=loaded.provenance,
    )
    wav_path, png_path, json_path = output_paths(spec.output)
    correlation = report["envelope_correlation"]
    scaled = "" if report["output_gain"] == 1.0 else f", scaled by {report['output_gain']:.3g}: the model's peak was {report['output_peak']:.3g}"
    print(f"wrote {wav_path} ({report['duration_seconds']:.2f} s at {report['sample_rate']} Hz, {report['chunks']} chunk(s){scaled})")
    print(f"wrote {png_path}")
    print(f"wrote {json_path} (envelope correlation with input {_format(correlation['input'])}, target {_format(correlation['target'])})")
    return 0


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f}"


# ------------------------------------------------------------------ batch (Ray Data)


class Fuser:
    """Ray Data actor: loads the codec and model once, then fuses one pair per row.

    Each row is written to ``out_dir/<name>.wav/.png/.json`` by the actor itself; what
    comes back is one small row per pair (``pair_id``, ``status``: ``"ok"`` or the
    reason it failed, and with ``evaluation_dir`` the pair's evaluation as JSON), never
    audio.

    Args:
        checkpoint: the fusion checkpoint, at a path every node reads (shared storage).
        codec_id: the id the driver checked; a worker whose codec differs refuses.
        codec_state: ``[ObjectRef]`` of the EnCodec weights (None for weight-free codecs).
        out_dir: where the fused files go (shared storage).
        pair_mode: ``--pair``.
        threads: torch intra-op threads (CPU actors).
        evaluation_dir: also score each fusion (``jingle evaluate fusion``) and draw its
            picture under this folder; None: fuse only.
        compare: name -> folder of other outputs scored beside the fusion (``<name>.wav``).
        arrangements: folder of the pairs' reference arrangements (``<name>.wav``), scored
            as ``arrangement`` and, through the codec, as ``arrangement_decoded``.
    """

    def __init__(
        self,
        *,
        checkpoint: str,
        codec_id: str,
        codec_state: list | None,
        out_dir: str,
        pair_mode: PairMode,
        threads: int,
        evaluation_dir: str | None = None,
        compare: dict[str, str] | None = None,
        arrangements: str | None = None,
    ) -> None:
        import ray

        torch.set_num_threads(max(1, threads))
        weights = ray.get(codec_state[0]) if codec_state else None
        self.device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        self.loaded = load_fusion_checkpoint(checkpoint, codec_state=weights, device=self.device)
        if self.loaded.codec.id != codec_id:
            raise RuntimeError(f"worker built codec {self.loaded.codec.id}, driver expected {codec_id}")
        # A bucket's files are written to a local folder first, then uploaded pair by pair.
        self.out = Location.of(out_dir)
        self.evaluation = Location.of(evaluation_dir) if evaluation_dir is not None else None
        self.staging = Path(tempfile.mkdtemp(prefix="jingle-fuse-"))
        self.out_dir = Path(self.out.uri) if self.out.is_local else self.staging / "out"
        self.evaluation_dir = None if self.evaluation is None else (
            self.evaluation.uri if self.evaluation.is_local else str(self.staging / "evaluation"))
        self.pair_mode = pair_mode
        self.compare = compare or {}
        self.arrangements = Path(arrangements) if arrangements else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        statuses, evaluations = [], []
        for pair_id, input_path, target_path, name in zip(batch["pair_id"], batch["input_path"], batch["target_path"], batch["name"]):
            evaluation = ""
            try:
                fused = self.out_dir / f"{name}.wav"
                report = fuse_pair(
                    self.loaded.model,
                    self.loaded.codec,
                    str(input_path),
                    str(target_path),
                    fused,
                    self.pair_mode,
                    self.loaded.segment_seconds,
                    self.device,
                    provenance={**self.loaded.provenance, "pair_id": str(pair_id)},
                )
                if self.evaluation_dir is not None:
                    evaluation = self._evaluate(str(pair_id), str(input_path), str(target_path), str(name), fused, report)
                self._upload()
                statuses.append("ok")
            except AudioError as error:  # a bad or short file fails its pair, not the run
                statuses.append(str(error))
            evaluations.append(evaluation)
        return {
            "pair_id": np.asarray(batch["pair_id"], dtype=object),
            "status": np.array(statuses, dtype=object),
            "evaluation": np.array(evaluations, dtype=object),
        }

    def _upload(self) -> None:
        """Move the staged files of a bucket's outputs into it (nothing for local folders)."""
        for location, staged in ((self.out, self.out_dir), (self.evaluation, Path(self.evaluation_dir or self.out_dir))):
            if location is not None and not location.is_local and staged.exists():
                upload_files(staged, location, remove=True)

    def _evaluate(self, pair_id: str, input_path: str, target_path: str, name: str, fused: Path, report: dict) -> str:
        from jingle.pipelines.fusion_evaluation import evaluate_files, picture_path
        from jingle.pipelines.fusion_inference import round_trip

        outputs = {"model": fused, **{label: Path(folder) / f"{name}.wav" for label, folder in self.compare.items()}}
        details = {"model": {key: report[key] for key in ("output_gain", "output_peak", "checkpoint", "step") if key in report}}
        codec = self.loaded.codec
        evaluation = evaluate_files(
            input_path, target_path, outputs, pair_id=pair_id, picture=picture_path(self.evaluation_dir, name), details=details,
            arrangement=None if self.arrangements is None else self.arrangements / f"{name}.wav",
            decoded_arrangement=lambda audio, rate: round_trip(codec, audio, rate, device=self.device),
        )
        return json.dumps(evaluation.to_dict())


def output_name(pair_id: str) -> str:
    """A pair id as a relative file name inside --out (sub-folders kept, no escape)."""
    parts = [part for part in PurePosixPath(pair_id.replace("\\", "/")).parts if part not in ("/", ".", "..")]
    return "/".join(parts) or "pair"


@dataclass
class BatchPlan:
    """The pairs of a folder or manifest that a batch will fuse, and those it cannot."""

    items: list[dict[str, str]]  # pair_id, input_path, target_path (absolute), name
    failed: dict[str, str]  # pair id -> why
    rejects: list  # files without a partner (datasets.pairs.Reject)


def plan_batch(source: str, out_dir: Location, *, flag: str) -> BatchPlan:
    """Discover the pairs of ``source`` and name each one's output in ``out_dir``.

    Raises:
        InputError: no folder or manifest there, or not one pair in it.
    """
    try:
        found = discover_fusion_pairs(source)  # before Ray: a wrong folder costs nothing
    except InputError as error:
        # discovery's messages name preprocessing's --pairs; say the flag this command took
        raise InputError(str(error).replace("--pairs ", f"{flag} ", 1)) from None
    items, failed, names = [], {}, {}
    for pair in found.pairs:
        name = output_name(pair.pair_id)
        # absolute paths: a worker's working directory is not the driver's
        sources = [str(Path(pair.input_path).resolve()), str(Path(pair.target_path).resolve())]
        if name in names:
            failed[pair.pair_id] = f"same output name {name!r} as pair {names[name]!r}"
        elif str(out_dir / f"{name}.wav") in sources:
            failed[pair.pair_id] = f"{out_dir / name}.wav would overwrite a source: choose another --out"
        else:
            names[name] = pair.pair_id
            items.append({"pair_id": pair.pair_id, "input_path": sources[0], "target_path": sources[1], "name": name})
    if not items:
        raise InputError(f"{flag} {source}: no pairs to fuse ({len(found.rejects)} file(s) without a partner)")
    return BatchPlan(items, failed, found.rejects)


def fuse_batch(
    plan: BatchPlan,
    spec: FusingSpec,
    out_dir: Location,
    *,
    evaluation_dir: Location | None = None,
    compare: dict[str, Path] | None = None,
    arrangements: str | None = None,
    prefix: str = "[fuse]",
) -> list[dict[str, str]]:
    """Fuse (and with ``evaluation_dir``, score) every planned pair on a Ray Data actor
    pool; returns one row per pair that was tried (``pair_id``, ``status``,
    ``evaluation``). ``spec`` gives the checkpoint, codec checkpoint, pair mode, device,
    actors and CPUs."""
    import ray

    from jingle.pipelines.common import init_ray

    # the driver checks the checkpoint, codec and --pair once, before any worker starts
    loaded = load_fusion_checkpoint(spec.checkpoint, codec_checkpoint=spec.codec_checkpoint, device="cpu")
    try:
        check_pair_mode(spec.pair, loaded.model.config)
    except ValueError as error:
        raise UsageError(str(error)) from None
    init_ray(spec.num_cpus)
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if spec.device == "cuda" and not gpus:
        raise UsageError("--device cuda: the Ray cluster has no GPU; use --device cpu")
    use_gpus = gpus > 0 and spec.device != "cpu"
    if use_gpus:
        threads, actors, remote_args = 2, spec.actors or gpus, {"num_cpus": 1, "num_gpus": 1}
    else:
        # Two torch threads per actor but one logical CPU reserved: an actor asking for a
        # whole 2-CPU node would wait forever behind any other task on it.
        per_node = max(int(node["Resources"].get("CPU", 1)) for node in ray.nodes() if node["Alive"])
        threads = min(2, per_node)
        actors = spec.actors or max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
        remote_args = {"num_cpus": 1}
    weights = loaded.codec.worker_state()
    codec_state = [ray.put(dict(weights))] if weights is not None else None
    items = plan.items
    dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        Fuser,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=min(actors, len(items))),
        fn_constructor_kwargs={
            "checkpoint": spec.checkpoint if is_remote(spec.checkpoint) else os.path.abspath(spec.checkpoint),
            "codec_id": loaded.codec.id,
            "codec_state": codec_state,
            "out_dir": str(out_dir),
            "pair_mode": spec.pair,
            "threads": threads,
            "evaluation_dir": str(evaluation_dir) if evaluation_dir is not None else None,
            "compare": {name: str(folder) for name, folder in (compare or {}).items()},
            "arrangements": None if arrangements is None else str(Path(arrangements).resolve()),
        },
        **remote_args,
    )
    del loaded  # the driver's copy of the model is not needed while the workers run
    rows = []
    for row in dataset.iter_rows():
        pair_id, status = str(row["pair_id"]), str(row["status"])
        rows.append({"pair_id": pair_id, "status": status, "evaluation": str(row["evaluation"])})
        print(f"{prefix} {pair_id}: {'ok' if status == 'ok' else 'failed: ' + status}", file=sys.stderr, flush=True)
    return rows


def run_batch(spec: FuseSpec) -> int:
    out_dir = Location.of(spec.out)
    check_writable(out_dir, "--out")
    plan = plan_batch(spec.batch, out_dir, flag="--batch")
    for reject in plan.rejects:
        print(f"[fuse] skipped {reject.path}: {reject.reason}", file=sys.stderr)
    failed = dict(plan.failed)
    fused = []
    for row in fuse_batch(plan, spec, out_dir):
        if row["status"] == "ok":
            fused.append(row["pair_id"])
        else:
            failed[row["pair_id"]] = row["status"]
    print(f"fused {len(fused)} pair(s) into {out_dir}, failed {len(failed)}")
    for pair_id in sorted(failed):
        print(f"  {pair_id}: {failed[pair_id]}")
    if plan.rejects:
        print(f"  skipped {len(plan.rejects)} file(s) without a partner")
    if not fused:
        raise InputError(f"--batch {spec.batch}: none of the {len(plan.items)} pair(s) could be fused")
    return 0


def evaluate_checkpoint(spec: EvaluateFusionSpec, *, compare: dict[str, Path]) -> list:
    """``jingle evaluate fusion --checkpoint CKPT --pairs DIR --out OUT``: fuse every pair
    into ``OUT/fused/`` and score it (with the ``compare`` outputs and the shortcuts);
    returns the pairs' evaluations (``PairEvaluation``), in pair order."""
    from jingle.pipelines.fusion_evaluation import PairEvaluation

    out = Location.of(spec.out)
    check_writable(out, "--out")
    plan = plan_batch(spec.pairs, out / "fused", flag="--pairs")
    for reject in plan.rejects:
        print(f"[evaluate] skipped {reject.path}: {reject.reason}", file=sys.stderr)
    failed = dict(plan.failed)
    evaluations = []
    rows = fuse_batch(plan, spec, out / "fused", evaluation_dir=out, compare=compare,
                      arrangements=spec.arrangements, prefix="[evaluate]")
    for row in rows:
        if row["status"] == "ok":
            values = json.loads(row["evaluation"])
            evaluations.append(PairEvaluation(values["input"], values["target"], values["outputs"], pair_id=values["pair_id"]))
        else:
            failed[row["pair_id"]] = row["status"]
    for pair_id in sorted(failed):
        print(f"[evaluate] {pair_id} not scored: {failed[pair_id]}", file=sys.stderr)
    if not evaluations:
        raise InputError(f"--pairs {spec.pairs}: none of the {len(plan.items)} pair(s) could be fused and scored")
    return sorted(evaluations, key=lambda evaluation: evaluation.pair_id)


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, lambda args: command(spec_from_args(FuseSpec, args)))
spec = FuseSpec  # keyword arguments -> the spec of a run
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main


if __name__ == "__main__":
    sys.exit(main())
