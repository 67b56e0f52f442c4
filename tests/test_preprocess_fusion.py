"""The real preprocessing pipeline on the session's local Ray (no mocks).

Corpora are seconds long with 1 s windows, so every run takes a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from jingle.datasets.audio import Segmenting, read_mono
from jingle.datasets.shards import JOURNAL, ShardStore, latents_to_numpy, shard_paths
from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from jingle.models.codecs import build_codec
from jingle.pipelines import preprocess_fusion
from tests.conftest import tone, write, write_pair

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parent.parent
SMALL = CorpusSpec(pairs=4, min_seconds=2.2, max_seconds=4.6, seed=3)


def preprocess(pairs: Path, out: Path, **settings) -> preprocess_fusion.Summary:
    spec = {"segment_seconds": 1, "rows_per_shard": 3, "quiet": True, **settings}
    return preprocess_fusion.run(preprocess_fusion.spec(pairs=str(pairs), out=out, **spec))


def rows_on_disk(out: Path) -> list[tuple[str, int, str]]:
    """Every row of every Parquet file in the shard folder (not just the manifest's)."""
    rows = []
    for path in sorted((out / "shards").glob("*.parquet")):
        table = pq.read_table(path, columns=["pair_id", "segment_index", "audio_sha256"])
        rows += zip(table["pair_id"].to_pylist(), table["segment_index"].to_pylist(), table["audio_sha256"].to_pylist())
    return sorted(rows)


def expected_segments(pairs_dir: Path, seconds: float = 1.0) -> dict[str, int]:
    counts = {}
    for path in sorted((pairs_dir / "input").glob("*.wav")):
        length = min(len(read_mono(path, 24_000)), len(read_mono(pairs_dir / "target" / path.name, 24_000)))
        counts[path.stem] = len(Segmenting(segment_seconds=seconds).bounds(length, 24_000))
    return counts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_fusion_corpus(root, SMALL)
    return root


@pytest.fixture(scope="module")
def clean_run(ray_session, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "shards"
    return out, preprocess(corpus, out)


def test_every_segment_is_written_once(clean_run, corpus):
    out, summary = clean_run
    expected = expected_segments(corpus)
    rows = rows_on_disk(out)
    assert [(p, i) for p, i, _ in rows] == sorted((p, i) for p, n in expected.items() for i in range(n))
    assert summary.segments_written == len(rows) == summary.total_rows
    assert summary.pairs_processed == 4 and summary.files_read == 8 and summary.rejects == []
    assert summary.audio_seconds == pytest.approx(len(rows) * 1.0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["totals"]["rows"] == len(rows)
    assert sum(f["rows"] for f in manifest["files"].values()) == len(rows)
    assert len({audio_hash for _, _, audio_hash in rows}) == len(rows)  # every window holds different audio


def test_latents_equal_a_direct_encode(clean_run, corpus):
    out, _ = clean_run
    table = pq.read_table(shard_paths(out)[0])
    row = table.slice(0, 1).to_pylist()[0]
    codec = build_codec("mel")
    audio = read_mono(Path(row["input_path"]), 24_000)
    start = round(row["start_s"] * 24_000)
    expected = codec.encode(torch.from_numpy(audio[start : start + 24_000])[None, None])[0].numpy()
    stored = latents_to_numpy(table["input_latent"])[0]
    assert stored.shape == (128, 75)
    np.testing.assert_allclose(stored, expected, atol=1e-5)
    assert row["codec_id"] == codec.id and row["sample_rate"] == 24_000 and row["frame_rate"] == 75.0


def test_ray_data_reads_the_shards(clean_run, ray_session):
    out, summary = clean_run
    dataset = ray_session.data.read_parquet(str(out / "shards"))
    assert dataset.count() == summary.total_rows
    batch = next(iter(dataset.select_columns(["input_latent", "target_latent"]).iter_torch_batches(batch_size=2)))
    assert batch["input_latent"].shape == (2, 128, 75)


def test_a_rerun_writes_nothing(clean_run, corpus):
    out, _ = clean_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    summary = preprocess(corpus, out)
    assert summary.pairs_processed == 0 and summary.segments_written == 0 and not summary.changed
    assert summary.report().startswith("nothing to do: 4 pairs already in")
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before


def test_new_pairs_are_processed_alone(ray_session, corpus, tmp_path):
    pairs = tmp_path / "pairs"
    write_fusion_corpus(pairs, CorpusSpec(pairs=2, min_seconds=2.2, max_seconds=3.5, seed=3))
    out = tmp_path / "out"
    preprocess(pairs, out)
    old_files = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    write_fusion_corpus(pairs, CorpusSpec(pairs=2, min_seconds=2.2, max_seconds=3.5, seed=3), first_index=2)
    summary = preprocess(pairs, out)
    assert summary.pairs_processed == 2 and summary.pairs_already_done == 2
    assert {p: t for p, t in ((p.name, p.stat().st_mtime_ns) for p in (out / "shards").iterdir()) if p in old_files} == old_files
    expected = expected_segments(pairs)
    assert [(p, i) for p, i, _ in rows_on_disk(out)] == sorted((p, i) for p, n in expected.items() for i in range(n))


def test_a_changed_pair_is_redone(ray_session, tmp_path):
    pairs, out = tmp_path / "pairs", tmp_path / "out"
    write_pair(pairs, "a", 2.5)
    write_pair(pairs, "b", 2.5)
    preprocess(pairs, out)
    write_pair(pairs, "a", 3.5, frequency=330.0)  # same name, new audio
    summary = preprocess(pairs, out)
    assert summary.pairs_processed >= 1
    rows = rows_on_disk(out)
    assert [(p, i) for p, i, _ in rows] == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]


def make_bad_corpus(root: Path) -> dict[str, str]:
    """Good pairs plus one of each kind of bad input; returns bad path -> expected reason."""
    write_pair(root, "good1", 2.5)
    write_pair(root, "good2", 3.2, sample_rate=44_100)
    bad = {}

    def bad_input(name: str, reason: str) -> Path:
        write(root / "target" / f"{name}.wav", tone(2.5, 24_000), 24_000)
        path = root / "input" / f"{name}.wav"
        bad[str(path)] = reason
        return path

    truncated = bad_input("truncated", "truncated: header declares")
    write(truncated, tone(2.5, 24_000), 24_000)
    truncated.write_bytes(truncated.read_bytes()[:30_000])
    corrupt = bad_input("corrupt", "not a readable audio file")
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x99\x99" + os.urandom(200))
    bad_input("empty", "empty file").write_bytes(b"")
    bad_input("text", "not a readable audio file").write_text("id,name\n1,not audio\n" * 30)
    nan = tone(2.5, 24_000)
    nan[1000:1010] = np.nan
    write(bad_input("nan", "NaN/Inf"), nan, 24_000, "FLOAT")
    inf = tone(2.5, 24_000)
    inf[5] = np.inf
    write(bad_input("inf", "NaN/Inf"), inf, 24_000, "FLOAT")
    write(bad_input("silent", "silent: every sample is zero"), np.zeros(60_000, np.float32), 24_000)
    write(bad_input("short", "shorter than one segment (0.40 s < 1 s)"), tone(0.4, 24_000), 24_000)
    bad_input("dangling", "file does not exist").symlink_to(root / "no-such-file.wav")
    bad_input("folder", "is a directory").mkdir()
    lonely = write(root / "input" / "lonely.wav", tone(2.5, 24_000), 24_000)
    bad[str(lonely)] = "no target: expected"
    return bad


def test_bad_inputs_are_rejected_and_good_files_still_written(ray_session, tmp_path):
    pairs, out = tmp_path / "pairs", tmp_path / "out"
    bad = make_bad_corpus(pairs)
    summary = preprocess(pairs, out)
    rejects = {r["path"]: r for r in pq.read_table(out / "rejects.parquet").to_pylist()}
    for path, reason in bad.items():
        assert path in rejects, f"{path} was not rejected"
        assert reason in rejects[path]["reason"], (path, rejects[path]["reason"])
    assert set(rejects) == set(bad)
    assert {r["stage"] for r in rejects.values()} == {"discovery", "probe", "decode"}
    assert [(p, i) for p, i, _ in rows_on_disk(out)] == [("good1", 0), ("good1", 1), ("good2", 0), ("good2", 1), ("good2", 2)]
    assert len(summary.rejects) == len(bad)
    # a first run: every reject is new (discovery, probe and decode alike)
    assert f"  files rejected     {len(bad)} ({len(bad)} new)" in summary.report().splitlines()
    # a rerun neither retries the bad files nor rewrites the rejects table
    mtime = (out / "rejects.parquet").stat().st_mtime_ns
    again = preprocess(pairs, out)
    assert again.pairs_processed == 0 and len(again.rejects) == len(bad)
    assert f"  files rejected     {len(bad)} (0 new)" in again.report().splitlines()
    assert (out / "rejects.parquet").stat().st_mtime_ns == mtime


def test_a_killed_run_resumes_to_exactly_the_clean_result(ray_session, ray_address, tmp_path, clean_run, corpus):
    clean_out, _ = clean_run
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipelines.preprocess_fusion", "--pairs", str(corpus), "--out", str(out),
               "--segment-seconds", "1", "--rows-per-shard", "1", "--encode-batch", "1", "--quiet"]
    process = subprocess.Popen(command, cwd=REPO, env={**os.environ, "RAY_ADDRESS": ray_address},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        journal = out / JOURNAL
        if journal.exists() and len(journal.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run finished before it could be killed: " + process.stderr.read().decode()[-500:]
    process.send_signal(signal.SIGKILL)
    process.wait()
    time.sleep(2)  # let Ray reap the dead driver's workers
    assert (out / JOURNAL).exists() and not (out / "manifest.json").exists()

    summary = preprocess(corpus, out, rows_per_shard=1)
    assert summary.took_over["pid"] == process.pid  # the killed run's lock, recognised and taken over
    assert "taken over from a run that did not finish" in summary.report()
    assert summary.pairs_already_done + summary.pairs_processed == 4
    assert rows_on_disk(out) == rows_on_disk(clean_out)
    resumed = {r["audio_sha256"]: r for path in shard_paths(out) for r in _latent_rows(path)}
    for path in shard_paths(clean_out):
        for row in _latent_rows(path):
            np.testing.assert_array_equal(resumed[row["audio_sha256"]]["input_latent"], row["input_latent"])


def _latent_rows(path: str) -> list[dict]:
    table = pq.read_table(path, columns=["audio_sha256", "input_latent"])
    latents = latents_to_numpy(table["input_latent"])
    return [{"audio_sha256": h, "input_latent": latents[i]} for i, h in enumerate(table["audio_sha256"].to_pylist())]


def test_encodec_pipeline_with_float16_latents(ray_session, tmp_path, encodec_checkpoint):
    pairs, out = tmp_path / "pairs", tmp_path / "out"
    write_pair(pairs, "a", 2.2)
    write_pair(pairs, "b", 1.3, sample_rate=48_000)
    summary = preprocess(pairs, out, codec="encodec_24khz", codec_checkpoint=str(encodec_checkpoint), latent_dtype="float16")
    assert summary.segments_written == 3
    table = pq.read_table(shard_paths(out)[0])
    latents = latents_to_numpy(table["target_latent"])
    assert latents.dtype == np.float16 and latents.shape[1:] == (128, 75)
    codec = build_codec("encodec_24khz", checkpoint=encodec_checkpoint)
    assert table["codec_id"][0].as_py() == codec.id
    # a different codec cannot be mixed into the same folder
    with pytest.raises(Exception, match="written with other settings"):
        preprocess_fusion.run(preprocess_fusion.spec(pairs=str(pairs), out=out, segment_seconds=1))


def test_pad_tail_keeps_the_last_partial_window(ray_session, tmp_path):
    pairs, out = tmp_path / "pairs", tmp_path / "out"
    write_pair(pairs, "a", 2.7)
    preprocess(pairs, out, tail="pad")
    table = pq.read_table(shard_paths(out)[0], columns=["segment_index", "start_s", "end_s"]).to_pylist()
    assert [(r["segment_index"], r["start_s"], round(r["end_s"], 3)) for r in table] == [(0, 0.0, 1.0), (1, 1.0, 2.0), (2, 2.0, 2.7)]


# ----------------------------------------------------------------- command line


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.mark.parametrize(
    "args, message",
    [
        (["preprocess", "fusion", "--out", "x"], "the following arguments are required: --pairs"),
        (["preprocess", "fusion", "--pairs", "p", "--out", "x", "--bogus"], "unrecognized arguments: --bogus"),
        (["preprocess", "fusion", "--pairs", "/no/such/dir", "--out", "x"], "--pairs /no/such/dir does not exist"),
        (["preprocess", "fusion", "--pairs", ".", "--out", "x", "--segment-seconds", "-1"], "segment_seconds must be positive"),
        (["preprocess", "fusion", "--pairs", ".", "--out", "x", "--codec", "mp3"], "invalid choice: 'mp3'"),
        (["tune", "fusion", "--space", "s.yaml"], "the following arguments are required: --data"),
    ],
)
def test_bad_usage_exits_2_with_one_line(args, message):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_missing_encodec_weights_exit_2_with_one_line(tmp_path):
    write_pair(tmp_path / "pairs", "a", 1.5)
    result = run_cli("preprocess", "fusion", "--pairs", str(tmp_path / "pairs"), "--out", str(tmp_path / "out"),
                     "--codec", "encodec_24khz")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "encodec_24khz-d7cc33bc.th" in result.stderr


def test_module_entry_point_runs_on_the_session_cluster(ray_address, tmp_path):
    write_pair(tmp_path / "pairs", "a", 2.2)
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.preprocess_fusion", "--pairs", str(tmp_path / "pairs"), "--out",
         str(tmp_path / "out"), "--segment-seconds", "1"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": ray_address}, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "preprocessed 1 pairs" in result.stdout and "segments written   2" in result.stdout
    assert "[preprocess] 1/1 pairs" in result.stderr


def test_a_second_run_exits_busy_or_waits_for_the_lock(ray_address, clean_run, corpus):
    """While a run holds --out, another exits at once with status 75 (--if-busy exit, the
    default) or waits and then does its work (--if-busy wait)."""
    out, _ = clean_run
    command = [sys.executable, "-m", "pipelines.preprocess_fusion", "--pairs", str(corpus), "--out", str(out),
               "--segment-seconds", "1", "--rows-per-shard", "3", "--quiet"]
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    manifest = json.loads((out / "manifest.json").read_text())
    with ShardStore(out, kind="fusion", settings=manifest["settings"]):
        busy = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert busy.returncode == 75
        assert busy.stderr.strip().splitlines() == [
            f"jingle preprocess fusion: busy: --out {out} is being written by another jingle run (pid {os.getpid()} on "
            f"{socket.gethostname()}, since {busy.stderr.split(', since ')[1].split(')')[0]}); rerun with --if-busy wait to wait for it"]
        waiting = subprocess.Popen(command + ["--if-busy", "wait"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(8)
        assert waiting.poll() is None  # still waiting on the lock
    stdout, stderr = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, stderr[-2000:]
    assert stdout.startswith("nothing to do: 4 pairs already in")


def test_reference_arrangements_are_encoded_beside_the_pairs(ray_session, tmp_path):
    """A pairs folder with arrangement/ (datasets/synth.py renders one per pair) gives shards
    with the arrangement's windows encoded like the sources; a pair without one holds the
    codec's silence and has_arrangement false. The folder's setting then sticks."""
    pairs = tmp_path / "pairs"
    write_fusion_corpus(pairs, CorpusSpec(pairs=3, min_seconds=2.2, max_seconds=2.2, seed=3), arrangements=True)
    (pairs / "arrangement" / "pair_0002.wav").unlink()
    out = tmp_path / "out"
    summary = preprocess(pairs, out)
    assert summary.pairs_processed == 3 and not summary.rejects
    assert json.loads((out / "manifest.json").read_text())["settings"]["arrangements"] is True
    codec = build_codec("mel")
    for path in shard_paths(out):
        table = pq.read_table(path)
        latents = latents_to_numpy(table["arrangement_latent"])  # [N, D, T]
        for row, (pair_id, index, has) in enumerate(zip(table["pair_id"].to_pylist(), table["segment_index"].to_pylist(),
                                                         table["has_arrangement"].to_pylist())):
            if pair_id == "pair_0002":
                assert has is False
                np.testing.assert_array_equal(latents[row], np.broadcast_to(codec.silence_latent().numpy()[:, None], latents[row].shape))
                continue
            assert has is True
            window = read_mono(pairs / "arrangement" / f"{pair_id}.wav", 24_000)[index * 24_000 : (index + 1) * 24_000]
            expected = codec.encode(torch.from_numpy(window)[None, None])[0].numpy()
            np.testing.assert_allclose(latents[row], expected, atol=1e-3)
    # without its arrangement/ folder the same --out is refused, not silently mixed
    import shutil

    shutil.rmtree(pairs / "arrangement")
    with pytest.raises(Exception, match="other settings.*arrangements"):
        preprocess(pairs, out)
