"""Fusion preprocessing on a real multi-node Ray cluster on this machine.

The test session already runs its one Ray, so the cluster (a head and two worker nodes of
one CPU each, ``ray.cluster_utils.Cluster``) lives in a child process that never touches
it. ``CLUSTER_DRIVER`` starts the cluster and preprocesses the corpus on all three nodes;
then, with one worker gone, again on the head and the other worker, killing that worker
at the run's first commit, and once more on the head alone to finish what the loss left.
It prints what happened as JSON lines; the tests compare its folders with a clean run of
the same corpus on the session's Ray.

Losing one of two 1-CPU nodes is the hard case: the lost node's encoder is started again
on the head, which then holds two encoders and no CPU to spare (a run that reserved CPU
for its decode and write tasks hung there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jingle.datasets.fusion_preprocess import Resources
from jingle.datasets.shards import JOURNAL, MANIFEST, latents_to_numpy
from jingle.datasets.synth import CorpusSpec, write_fusion_corpus
from jingle.pipelines import preprocess_fusion
from tests.conftest import copy_tree

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parent.parent
# 6 pairs, ~20 one-second segments: more blocks than encoders, so that every encoder gets
# some, and a node lost at the first commit leaves work behind.
CORPUS = CorpusSpec(pairs=6, min_seconds=2.6, max_seconds=4.6, seed=11)
FLAGS = ["--segment-seconds", "1", "--rows-per-shard", "2", "--encode-batch", "1", "--quiet"]
SETTINGS = {"segment_seconds": 1, "rows_per_shard": 2, "encode_batch": 1, "quiet": True}  # FLAGS, as a spec takes them
# A run on the cluster that takes longer than this is taken for hung (runs take 30-80 s on
# two cores under heavy load).
RUN_LIMIT_S = 180

CLUSTER_DRIVER = r"""
import json, os, sys, threading, time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from ray.data import DataContext

corpus, spread_out, lossy_out, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
flags = sys.argv[5:]
started = time.monotonic()


def report(**fields):
    print(json.dumps({**fields, f"{next(iter(fields))}_at_s": round(time.monotonic() - started, 1)}), flush=True)


def preprocess(name, out):
    # A run that outlives ``limit`` is taken for hung (a finding): say so, leave no cluster.
    def give_up():
        report(hung=name, alive=[node["NodeID"] for node in ray.nodes() if node["Alive"]])
        cluster.shutdown()
        os._exit(3)

    watchdog = threading.Timer(limit, give_up)
    watchdog.daemon = True
    watchdog.start()
    run_started = time.monotonic()
    code = preprocess_fusion.main(["--pairs", corpus, "--out", out, *flags])
    watchdog.cancel()
    report(**{name: code, f"{name}_s": round(time.monotonic() - run_started, 1)})


# A killed raylet is noticed by failed health checks: 3 one-second checks instead of
# Ray's 5 three-second ones, so that the lost node's tasks are retried sooner.
health_checks = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
head = {"num_cpus": 1, "include_dashboard": False, "_system_config": health_checks}
cluster = Cluster(initialize_head=True, head_node_args=head)
try:
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    # Start every encoder before the first block flows: actors start tens of seconds
    # apart on a busy machine, and the first one up would otherwise encode the whole of
    # a corpus this small.
    DataContext.get_current().wait_for_min_actors_s = 120
    from jingle.pipelines import preprocess_fusion

    report(nodes=sorted(node["NodeID"] for node in ray.nodes() if node["Alive"]), head=cluster.head_node.node_id)
    preprocess("spread", spread_out)

    cluster.remove_node(workers[0])
    cluster.wait_for_nodes()
    victim, journal = workers[1], Path(lossy_out) / "journal.jsonl"

    def kill_at_first_commit():
        while not (journal.exists() and journal.read_text().strip()):
            time.sleep(0.05)
        cluster.remove_node(victim, allow_graceful=False)
        report(killed=victim.node_id, commits_before=len(journal.read_text().splitlines()))

    threading.Thread(target=kill_at_first_commit, daemon=True).start()
    preprocess("first", lossy_out)
    report(journal_left=journal.exists())
    # A run that fails at once may end before Ray has noticed the node is gone; a rerun
    # then would count it and place an encoder on it (which fails that rerun too).
    cluster.wait_for_nodes()
    preprocess("rerun", lossy_out)
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_fusion_corpus(root, CORPUS)
    return root


@pytest.fixture(scope="module")
def clean_run(ray_session, corpus, tmp_path_factory) -> Path:
    """The corpus preprocessed on the session's Ray, nothing lost."""
    out = tmp_path_factory.mktemp("clean") / "out"
    preprocess_fusion.run(preprocess_fusion.spec(pairs=str(corpus), out=out, **SETTINGS))
    return out


@pytest.fixture(scope="module")
def cluster_runs(corpus, tmp_path_factory) -> dict:
    """Run ``CLUSTER_DRIVER`` once; its JSON lines merged, plus the two output folders."""
    folder = tmp_path_factory.mktemp("cluster")
    spread_out, lossy_out = folder / "spread", folder / "lossy"
    result = subprocess.run(
        [sys.executable, "-c", CLUSTER_DRIVER, str(corpus), str(spread_out), str(lossy_out), str(RUN_LIMIT_S), *FLAGS],
        cwd=REPO, capture_output=True, text=True, timeout=4 * RUN_LIMIT_S,
        env={key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"},
    )
    events = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            events.update(json.loads(line))
    # the one-line errors of runs that failed (a run that loses a node may)
    events["errors"] = [line for line in result.stderr.splitlines() if line.startswith(preprocess_fusion.PROG)]
    print(json.dumps(events))  # shown with -s, or when a test fails
    assert not events.get("hung"), f"a run hung: {events}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, f"{events}\n{result.stderr[-3000:]}"
    return {**events, "spread_out": spread_out, "lossy_out": lossy_out}


def shard_rows(out: Path) -> dict[tuple[str, int], bytes]:
    """(pair id, segment index) -> both latents' bytes, for every row of every Parquet file
    in the shard folder (not only the manifest's files); a duplicate row fails."""
    rows = {}
    for path in sorted((out / "shards").iterdir()):
        assert path.suffix == ".parquet" and not path.name.startswith("."), f"stray file {path.name}"
        table = pq.read_table(path)
        latents = {role: latents_to_numpy(table[f"{role}_latent"]) for role in ("input", "target")}
        for row, key in enumerate(zip(table["pair_id"].to_pylist(), table["segment_index"].to_pylist())):
            assert key not in rows, f"row {key} is in two files"
            rows[key] = latents["input"][row].tobytes() + latents["target"][row].tobytes()
    return rows


def test_encode_work_spreads_over_every_node(cluster_runs, clean_run):
    assert cluster_runs["spread"] == 0
    assert len(cluster_runs["nodes"]) == 3
    manifest = json.loads((cluster_runs["spread_out"] / MANIFEST).read_text())
    encoded_on = [node for entry in manifest["files"].values() for node in entry["encoded_on"]]
    assert set(encoded_on) == set(cluster_runs["nodes"])
    assert shard_rows(cluster_runs["spread_out"]) == shard_rows(clean_run)


def test_a_lost_node_costs_no_row(cluster_runs, clean_run):
    """A worker node killed at the run's first commit: the run ends (finished or failed,
    not hung) and at most one rerun on the head alone leaves exactly the clean run's rows,
    none twice, no file the manifest does not name."""
    assert cluster_runs["killed"] in cluster_runs["nodes"] and cluster_runs["killed"] != cluster_runs["head"]
    assert cluster_runs["rerun"] == 0
    out = cluster_runs["lossy_out"]
    clean = shard_rows(clean_run)
    rows = shard_rows(out)
    assert sorted(rows) == sorted(clean)
    assert all(rows[key] == clean[key] for key in clean)  # the same latents, byte for byte
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted(path.name for path in (out / "shards").iterdir())
    assert manifest["totals"]["rows"] == len(clean)
    assert not (out / JOURNAL).exists()


def test_a_manifest_from_before_encoded_on_still_loads(clean_run, corpus, tmp_path):
    """A folder written before shards recorded their encoder nodes: nothing to redo."""
    old = copy_tree(clean_run, tmp_path / "old")
    manifest = json.loads((old / MANIFEST).read_text())
    for entry in manifest["files"].values():
        del entry["encoded_on"]
    (old / MANIFEST).write_text(json.dumps(manifest))
    summary = preprocess_fusion.run(preprocess_fusion.spec(pairs=str(corpus), out=old, **SETTINGS))
    assert summary.pairs_processed == 0 and summary.pairs_already_done == CORPUS.pairs
    assert summary.total_rows == len(shard_rows(clean_run)) and summary.removed_orphans == 0


@pytest.mark.parametrize(
    "node_cpus, actors, cpus",
    [
        ([2], 1, 1.5),  # one 2-core machine: one 2-thread encoder, half a CPU for decode
        ([1, 1, 1], 3, 0.5),  # three 1-CPU nodes: one encoder each, each keeps half a CPU
        ([16, 16, 16, 16], 32, 1.94),
        ([0, 4], 2, 1.75),  # a head without CPUs holds no encoder
    ],
)
def test_encoders_leave_every_node_half_a_cpu(node_cpus, actors, cpus):
    resources = Resources.for_nodes(node_cpus)
    assert (resources.encoder_actors, resources.encoder_cpus) == (actors, cpus)
    per_node = max(node_cpus) // resources.encoder_threads
    assert max(node_cpus) - per_node * resources.encoder_cpus >= 0.45  # half a CPU, less rounding
    # decode and write reserve no CPU: encoders packed onto a node cannot starve them
    assert resources.decode_cpus == resources.write_cpus == 0
