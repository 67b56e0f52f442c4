"""``jingle demo``: the end-to-end run on one machine, with nothing downloaded.

Fusion: generates a small corpus of fusion pairs (drum loops as inputs, chord progressions
as targets, each with its rendered arrangement) and one held-out pair, preprocesses the
corpus into 4 s latent segments through Ray Data, trains the fusion model with Ray Train
(one worker with both cores: a small model on small batches gains nothing from DDP on 2
cores; ``configs/demo.json``: a small model that learns from the rendered arrangements),
fuses the held-out pair with the best checkpoint and scores it against the shortcuts and
the held-out pair's own rendered arrangement.

Pointer network: generates raw recordings and edits of them (cuts, repeats, reorders; half
of them post-processed), half labelled with pointers and half left to the alignment,
preprocesses, trains a small conform model (``configs/pointer/demo.json``) and conforms a
held-out processed edit with the network and with the alignment alone.

It prints where the shards, checkpoints, MLflow stores and outputs are.

    python -m pipelines.demo [--out DIR] [--codec mel|encodec_24khz] [--models fusion,pointer]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from jingle.models.codecs import CODEC_NAMES
from jingle.pipelines import conform, fuse, preprocess_fusion, preprocess_pointer, train_fusion, train_pointer
from jingle.pipelines.common import PROJECT_ROOT, EntryPoint, UsageError, add_codec_checkpoint_argument, add_common_arguments

PROG = "jingle demo"
DEMO_CONFIG = PROJECT_ROOT / "configs" / "demo.json"
POINTER_DEMO_CONFIG = PROJECT_ROOT / "configs" / "pointer" / "demo.json"
MODELS = ("fusion", "pointer")
SEGMENT_SECONDS = 4  # short segments: a validation decodes and scores them, and attention costs T^2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="jingle-demo", help="output folder (default: ./jingle-demo)")
    parser.add_argument("--codec", choices=CODEC_NAMES, default="mel", help="latent codec (default: mel)")
    add_codec_checkpoint_argument(parser)
    parser.add_argument("--pairs", type=int, default=8, help="generated training pairs (default: 8)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (default: 0)")
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="training config (default: configs/demo.json)")
    parser.add_argument("--workers", type=int, default=2, help="pointer network training workers (default: 2)")
    parser.add_argument("--fusion-workers", type=int, default=1, help="fusion model training workers (default: 1)")
    parser.add_argument("--models", default="fusion,pointer", help="which models to run, comma-separated (default: fusion,pointer)")
    add_common_arguments(parser)


def command(args: argparse.Namespace) -> int:
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown or not models:
        raise UsageError(f"--models takes a comma-separated subset of {list(MODELS)}, got {args.models!r}")
    out = Path(args.out).resolve()
    started = time.perf_counter()
    lines, trainings = [], []
    if "fusion" in models:
        code = fusion_demo(args, out, lines, trainings)
        if code:
            return code
    if "pointer" in models:
        pointer_demo(args, out, lines, trainings)
    print("\nwhere things are:\n" + "\n".join(lines))
    total = time.perf_counter() - started
    training = sum(summary.seconds for summary in trainings)
    in_steps = sum(summary.metrics.get("run_step_seconds", 0.0) for summary in trainings)
    print(f"\nthe demo took {total:.0f} s: {training:.0f} s training ({training / total:.0%}), of which "
          f"{in_steps:.0f} s in training steps ({in_steps / total:.0%} of the demo; the rest is Ray and worker start-up, "
          f"data, validation and checkpoints)")
    return 0


HELD_OUT_FIGURES = (("note onsets on the input's hits, F1", "note_onset_f1"), ("pitch-class precision", "pitch_class_precision"),
                    ("pitch-class recall", "pitch_class_recall"), ("clarity", "clarity"))


def held_out_summary(outputs: list[dict]) -> str:
    """The held-out fusion's score and note figures beside the rendered arrangement's
    (as decoded through the codec, the way the model's output is) and the best shortcut's."""
    by_name = {entry["name"]: entry for entry in outputs}
    best = max((entry for entry in outputs if entry.get("shortcut")), key=lambda entry: entry["score"])
    columns = [("model", by_name["model"]), ("arrangement", by_name["arrangement_decoded"]), ("best shortcut", best)]
    width = max(len(label) for label, _ in (*HELD_OUT_FIGURES, ("arrangement score", "")))
    cell = max(len(label) for label, _ in columns) + 2
    lines = ["held-out fusion, against the rendered arrangement (decoded through the codec, as the model's output is) "
             f"and the best shortcut ({best['name']}); higher is better:",
             " " * (width + 2) + "".join(f"{label:>{cell}}" for label, _ in columns)]
    rows = [("arrangement score", None)] + list(HELD_OUT_FIGURES)
    for label, figure in rows:
        cells = [entry["score"] if figure is None else entry["figures"].get(figure) for _, entry in columns]
        lines.append(f"  {label:<{width}}" + "".join(f"{'n/a' if value is None else f'{value:.3f}':>{cell}}" for value in cells))
    verdict = "beats" if by_name["model"]["score"] > best["score"] else "does not beat"
    lines.append(f"  the model {verdict} every shortcut on the score")
    return "\n".join(lines)


def fusion_demo(args: argparse.Namespace, out: Path, lines: list[str], trainings: list) -> int:
    corpus, held_out = out / "corpus", out / "held-out"
    if not (corpus / "input").is_dir():
        ids = write_fusion_corpus(corpus, CorpusSpec(pairs=args.pairs, min_seconds=20, max_seconds=40, seed=args.seed), arrangements=True)
        # generated from the same seed but an index the corpus never uses: a pair no worker saw
        write_fusion_corpus(held_out, CorpusSpec(pairs=1, min_seconds=20, max_seconds=20, seed=args.seed), first_index=10_000,
                            arrangements=True)
        print(f"[demo] generated {len(ids)} pairs of drums (input) and chords (target) in {corpus}", file=sys.stderr)
    else:
        print(f"[demo] reusing the corpus in {corpus}", file=sys.stderr)

    shards = out / f"shards-{args.codec}"
    print("[demo] fusion 1/4: preprocessing", file=sys.stderr)
    summary = preprocess_fusion.run(preprocess_fusion.spec(
        pairs=str(corpus), out=shards, codec=args.codec, codec_checkpoint=args.codec_checkpoint, rows_per_shard=16,
        segment_seconds=SEGMENT_SECONDS, num_cpus=args.num_cpus, debug=args.debug,
    ))
    print(summary.report())

    print(f"[demo] fusion 2/4: training with {args.fusion_workers} worker(s)", file=sys.stderr)
    trained = train_fusion.run(train_fusion.spec(
        data=str(shards), config=args.config, workers=args.fusion_workers, storage=out / "runs", name=f"demo-{args.codec}",
        task_options={"codec_checkpoint": args.codec_checkpoint}, num_cpus=args.num_cpus, debug=args.debug,
    ))
    print(trained.report())
    trainings.append(trained)

    print("[demo] fusion 3/4: fusing the held-out pair", file=sys.stderr)
    fused = out / "fused" / "held_out.wav"
    fuse.command(fuse.spec(checkpoint=trained.best_checkpoint, input=str(held_out / "input" / "pair_10000.wav"),
                           target=str(held_out / "target" / "pair_10000.wav"), output=str(fused), device="cpu",
                           codec_checkpoint=args.codec_checkpoint))

    print("[demo] fusion 4/4: scoring the fusion against the shortcuts and the rendered arrangement", file=sys.stderr)
    from jingle.models.codecs import build_codec
    from jingle.pipelines.fusion_evaluation import evaluate_files, picture_path, write_report
    from jingle.pipelines.fusion_inference import round_trip

    evaluation_dir = out / "evaluation"
    sources = held_out / "input" / "pair_10000.wav", held_out / "target" / "pair_10000.wav"
    codec = build_codec(args.codec, checkpoint=args.codec_checkpoint)
    evaluation = evaluate_files(
        *map(str, sources), {"model": fused}, pair_id="held_out", picture=picture_path(evaluation_dir, "held_out"),
        arrangement=held_out / "arrangement" / "pair_10000.wav", decoded_arrangement=lambda audio, rate: round_trip(codec, audio, rate),
    )
    report_json, report_markdown = write_report(evaluation_dir, [evaluation])
    print(held_out_summary(evaluation.outputs) + f" ({report_markdown})")
    lines += [
        f"  fusion corpus        {corpus}/input, {corpus}/target (held-out pair in {held_out})",
        f"  fusion shards        {shards}/shards/*.parquet, {shards}/manifest.json, {shards}/rejects.parquet",
        f"  fusion checkpoints   {trained.run_dir} (best: {trained.best_checkpoint})",
        f"  MLflow               {trained.tracking_uri} (run {trained.run_id}); open it with: mlflow ui --backend-store-uri {trained.tracking_uri}",
        f"  fused audio          {fused}, {fused.with_suffix('.png')}, {fused.with_suffix('.json')}",
        f"  arrangement scores   {report_markdown}, {report_json}, {evaluation_dir / 'pictures'}",
    ]
    return 0


def pointer_demo(args: argparse.Namespace, out: Path, lines: list[str], trainings: list) -> None:
    """Edit pairs -> shards -> a small conform model -> a held-out edit conformed two ways."""
    import numpy as np

    from jingle.datasets.edits import make_conform_pair, write_pointer_corpus
    from jingle.training.pointer_config import PointerTrainConfig

    features = PointerTrainConfig.from_file(POINTER_DEMO_CONFIG).features
    corpus, held_out = out / "pointer-corpus", out / "pointer-held-out"
    held = make_conform_pair(args.seed * 1000 + 999, seconds=16.0, features=features, processed=True)
    if not (corpus / "raw").is_dir():
        pairs = [
            make_conform_pair(args.seed * 1000 + index, seconds=16.0, features=features, processed=index % 2 == 1)
            for index in range(max(4, args.pairs))
        ]
        # half with pointer files, half left to the alignment
        write_pointer_corpus(corpus, pairs[::2], features, labels="pointers")
        write_pointer_corpus(corpus, pairs[1::2], features, labels="none")
        write_pointer_corpus(held_out, [held], features, labels="pointers")
        print(f"[demo] generated {len(pairs)} raw recordings with edits in {corpus}", file=sys.stderr)
    shards = out / "pointer-shards"
    print("[demo] pointer 1/3: preprocessing (alignment where no pointers are given)", file=sys.stderr)
    summary = preprocess_pointer.run(preprocess_pointer.spec(
        pairs=str(corpus), out=shards, config=str(POINTER_DEMO_CONFIG), quiet=True, num_cpus=args.num_cpus, debug=args.debug,
    ))
    print(summary.report())
    print(f"[demo] pointer 2/3: training a conform model with {args.workers} workers", file=sys.stderr)
    trained = train_pointer.run(train_pointer.spec(
        data=str(shards), config=str(POINTER_DEMO_CONFIG), workers=args.workers, storage=out / "runs", name="demo-pointer",
        num_cpus=args.num_cpus, debug=args.debug,
    ))
    print(trained.report())
    trainings.append(trained)
    print("[demo] pointer 3/3: conforming the held-out processed edit", file=sys.stderr)
    raw, edited = held_out / "raw" / f"{held.name}.wav", held_out / "edit" / f"{held.name}.wav"
    lines += [
        f"  pointer corpus       {corpus}/raw, {corpus}/edit, {corpus}/pointers (held-out edit in {held_out})",
        f"  pointer shards       {shards}/shards/*.parquet, {shards}/manifest.json",
        f"  pointer checkpoints  {trained.run_dir} (best: {trained.best_checkpoint}); MLflow run {trained.run_id}",
    ]
    for method in ("network", "align"):
        edl = out / "conformed" / f"{method}.json"
        source = {"checkpoint": trained.best_checkpoint} if method == "network" else {"config": str(POINTER_DEMO_CONFIG)}
        conformed = conform.run(conform.spec(raw=str(raw), edited=str(edited), out=str(edl), method=method, **source))
        accuracy = float(np.mean(np.abs(conformed.pointers - held.pointers) <= 2))
        lines.append(f"  conformed ({method:<7})  {edl}, {edl.with_suffix('.png')} ({len(conformed.edl)} segments, "
                     f"{accuracy:.0%} of edit frames within ±2 frames of the truth)")
    lines.append(f"  (the demo trains the pointer network for {trained.step} steps, about a minute; "
                 f"bench/pointer.py trains it longer for the figures in docs/benchmarks.md)")


ENTRY_POINT = EntryPoint(PROG, __doc__, add_arguments, command)
build_parser, main = ENTRY_POINT.build_parser, ENTRY_POINT.main


if __name__ == "__main__":
    sys.exit(main())
