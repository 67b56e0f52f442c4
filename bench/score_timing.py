"""What hearing notes costs: the arrangement score's time per 16 s clip, transcriber apart.

    python bench/score_timing.py [--clips 8] [--seconds 16] [--threads 1] [--work DIR]

Generated arrangements (``datasets/synth.py``) of ``--seconds``, scored as ``jingle
evaluate fusion`` scores an output (``evaluation/arrangement.py: score_output`` against
analysed sources), after one warm-up clip (imports, the ONNX session, librosa's first
calls). Printed per clip (median over ``--clips``): the transcription alone (Basic Pitch
through onnxruntime, ``--threads`` intra-op threads: a training worker's validation runs
with one), the whole score, and the score less the transcription (the spectral figures,
the baseline: what the score cost before it heard notes), and their ratio; also written to
``WORK/results.json``.
"""

from __future__ import annotations

if __package__ in (None, ""):  # run as a file: make the project importable
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.machine import describe_machine
from jingle.datasets.synth import CorpusSpec, generate_pair
from jingle.evaluation import transcription
from jingle.evaluation.arrangement import analyse_sources, score_output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=16.0)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default: 1)")
    parser.add_argument("--work", default="out/bench-score-timing", help="results.json goes here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    print(describe_machine())
    spec = CorpusSpec(pairs=args.clips + 1, min_seconds=args.seconds, max_seconds=args.seconds, mixed_formats=False)
    transcribe_seconds, score_seconds = [], []
    for index in range(args.clips + 1):
        pair = generate_pair(index, spec)
        rate = pair.target.sample_rate
        sources = analyse_sources(pair.input.audio, pair.target.audio, rate)
        output = pair.arrangement(rate)
        started = time.perf_counter()
        transcription.transcribe(output, rate, threads=args.threads)
        transcribed = time.perf_counter() - started
        started = time.perf_counter()
        score_output(sources, output, rate)
        scored = time.perf_counter() - started
        if index:  # the first clip warms up
            transcribe_seconds.append(transcribed)
            score_seconds.append(scored)
    transcribing, scoring = float(np.median(transcribe_seconds)), float(np.median(score_seconds))
    print(f"per {args.seconds:.0f} s clip (median of {args.clips}, {args.threads} transcriber thread(s)): "
          f"transcription {transcribing:.3f} s, whole score {scoring:.3f} s, score less transcription "
          f"{scoring - transcribing:.3f} s; whole / without notes {scoring / max(scoring - transcribing, 1e-9):.2f}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = {"clips": args.clips, "seconds": args.seconds, "threads": args.threads, "transcribe_s": transcribing, "score_s": scoring}
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
