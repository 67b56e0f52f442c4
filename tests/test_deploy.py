"""deploy/: the hourly preprocessing units and the script they call, against a fake ``ray``.

The fake records its arguments and environment and answers a reused submission id with Ray
2.60's own refusal (read from the installed Ray, so a Ray upgrade that rewords it fails here).
"""

from __future__ import annotations

import configparser
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SCRIPT = DEPLOY / "submit-preprocess.sh"
ENV_FILE = "/etc/jingle/preprocess.env"


def ray_refusal_template() -> str:
    """Ray's message for a reused submission id, with ``{submission_id}`` left in."""
    source = Path(importlib.util.find_spec("ray.dashboard.modules.job.job_manager").origin).read_text()
    match = re.search(r'f"(Job with submission_id \{submission_id\} already exists\. )"\s*"([^"]*)"', source)
    assert match, "Ray no longer words the reused-submission-id refusal as deploy/submit-preprocess.sh expects"
    return match.group(1) + match.group(2)


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((DEPLOY / name).read_text())
    return parser


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert SCRIPT.stat().st_mode & 0o111, "deploy/submit-preprocess.sh is not executable"


def test_the_cron_line_runs_the_script_hourly():
    lines = [line for line in (DEPLOY / "jingle-preprocess.cron").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    assert len(lines) == 1, lines
    minute, hour, day, month, weekday, command = lines[0].split(maxsplit=5)
    assert minute.isdigit() and 0 <= int(minute) <= 59 and (hour, day, month, weekday) == ("*", "*", "*", "*")
    assert "/deploy/submit-preprocess.sh" in command and f"JINGLE_ENV_FILE={ENV_FILE}" in command
    assert "%" not in command  # cron turns % into a newline


def test_the_timer_starts_the_service_hourly_and_catches_up():
    timer = unit("jingle-preprocess.timer")
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["Unit"] == "jingle-preprocess.service"
    assert timer["Timer"]["OnCalendar"] == "hourly"
    assert timer["Install"]["WantedBy"] == "timers.target"
    service = unit("jingle-preprocess.service")["Service"]
    assert service["Type"] == "oneshot" and service["EnvironmentFile"] == ENV_FILE
    assert service["ExecStart"].endswith("/deploy/submit-preprocess.sh")
    assert "75" in service["SuccessExitStatus"].split()


def test_systemd_accepts_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not on PATH")

    def verify(*units: Path) -> subprocess.CompletedProcess:
        return subprocess.run([analyze, "verify", "--man=no", *map(str, units)], capture_output=True, text=True, timeout=60)

    # ExecStart must name an executable: point it at a stub inside this copy
    stub = tmp_path / "submit-preprocess.sh"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    probe = tmp_path / "jingle-probe.service"
    probe.write_text(f"[Service]\nType=oneshot\nExecStart={stub}\n")
    if (probe_run := verify(probe)).returncode != 0:
        pytest.skip(f"systemd-analyze verify cannot run here: {probe_run.stderr.strip()[:300]}")
    service = tmp_path / "jingle-preprocess.service"
    service.write_text(re.sub(r"(?m)^ExecStart=.*$", f"ExecStart={stub}", (DEPLOY / service.name).read_text()))
    timer = tmp_path / "jingle-preprocess.timer"
    shutil.copy(DEPLOY / timer.name, timer)
    result = verify(timer, service)
    # unknown keys and bad values are only warnings: any line about our units fails the test
    complaints = [line for line in result.stderr.splitlines() if "jingle-preprocess" in line]
    assert result.returncode == 0 and not complaints, result.stderr


FAKE_RAY = '''\
#!{python}
"""A stand-in for `ray job submit`: records its call; refuses a submission id it has seen."""
import json, os, sys
state = os.environ["FAKE_RAY_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls.jsonl"), "a") as calls:
    calls.write(json.dumps({{"args": args, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE")}}) + "\\n")
submission_id = args[args.index("--submission-id") + 1]
seen_path = os.path.join(state, "submitted")
seen = open(seen_path).read().split() if os.path.exists(seen_path) else []
job = os.environ.get("FAKE_RAY_JOB", "succeeds")
if job == "unreachable":
    print("ConnectionError: Failed to connect to Ray at address: http://head:8265.", file=sys.stderr)
    sys.exit(1)
if submission_id in seen:  # what the CLI prints: the agent's traceback inside the head's
    print("Traceback (most recent call last):\\n  ...\\nRuntimeError: Request failed with status code 500: "
          "Traceback (most recent call last):\\n  ...\\nRuntimeError: Request failed with status code 400: "
          "Traceback (most recent call last):\\n  ...\\nValueError: " + {refusal!r}.format(submission_id=submission_id)
          + "\\n.\\n.", file=sys.stderr)
    sys.exit(1)
with open(seen_path, "a") as out:
    out.write(submission_id + "\\n")
print(f"Job submission server address: {{args[args.index('--address') + 1]}}")
print(f"Job '{{submission_id}}' submitted successfully")
print("Tailing logs until the job exits (disable with --no-wait):")
if job == "busy":
    print("jingle preprocess fusion: --out s3://bucket/shards is being written by another jingle run; "
          "rerun with --if-busy wait to wait for it", file=sys.stderr)
    sys.exit(1)
if job == "fails":
    print("jingle preprocess fusion: internal error: OSError: disk full", file=sys.stderr)
    sys.exit(1)
print("preprocessed 3 new pairs")
'''


class FakeCluster:
    """A fake `ray` first on PATH, a token in a temporary HOME, and the script's settings."""

    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.home = root / "home"
        self.bin.mkdir()
        (self.home / ".ray").mkdir(parents=True)
        (self.home / ".ray" / "auth_token").write_text("fake-token")
        self.install(self.bin)
        self.settings = {"RAY_ADDRESS": "http://head:8265", "JINGLE_DIR": str(ROOT),
                         "JINGLE_PAIRS": "s3://bucket/jingle/pairs", "JINGLE_OUT": "s3://bucket/jingle/shards"}

    def install(self, folder: Path) -> None:
        ray = folder / "ray"
        ray.write_text(FAKE_RAY.format(python=sys.executable, refusal=ray_refusal_template()))
        ray.chmod(0o755)

    def pin_hour(self, stamp: str) -> None:
        """A `date` that always says this UTC hour (two firings cannot straddle an hour)."""
        date = self.bin / "date"
        date.write_text(f"#!/bin/sh\necho {stamp}\n")
        date.chmod(0o755)

    def fire(self, path: str | None = None, **overrides: str | None) -> subprocess.CompletedProcess:
        env = {"PATH": path or f"{self.bin}:/usr/bin:/bin", "HOME": str(self.home), "FAKE_RAY_STATE": str(self.root)}
        env.update(self.settings)
        env.update(overrides)
        env = {key: value for key, value in env.items() if value is not None}
        return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)

    def calls(self) -> list[dict]:
        path = self.root / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def cluster(tmp_path) -> FakeCluster:
    return FakeCluster(tmp_path)


def test_a_firing_submits_the_hours_run_in_token_mode(cluster):
    before = time.strftime("%Y%m%d%H", time.gmtime())
    result = cluster.fire()
    after = time.strftime("%Y%m%d%H", time.gmtime())
    assert result.returncode == 0, result.stdout + result.stderr
    [call] = cluster.calls()
    submission_id = call["args"][call["args"].index("--submission-id") + 1]
    assert submission_id in {f"jingle-preprocess-{before}", f"jingle-preprocess-{after}"}
    assert call["args"] == ["job", "submit", "--address", "http://head:8265", "--submission-id", submission_id,
                            "--working-dir", str(ROOT), "--", "python", "-m", "pipelines.preprocess_fusion",
                            "--pairs", "s3://bucket/jingle/pairs", "--out", "s3://bucket/jingle/shards", "--if-busy", "exit"]
    assert call["RAY_AUTH_MODE"] == "token"
    assert "preprocessed 3 new pairs" in result.stdout and f"{submission_id} finished" in result.stdout


def test_a_second_firing_in_the_hour_is_refused_by_ray_and_succeeds(cluster):
    cluster.pin_hour("2026112723")
    assert cluster.fire().returncode == 0
    again = cluster.fire()
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines() == [
        "jingle-preprocess: this hour's run jingle-preprocess-2026112723 was already submitted; not submitting it again"]
    assert again.stderr == ""
    assert [c["args"][c["args"].index("--submission-id") + 1] for c in cluster.calls()] == ["jingle-preprocess-2026112723"] * 2


def test_the_next_hour_submits_again(cluster):
    cluster.pin_hour("2026112723")
    cluster.fire()
    cluster.pin_hour("2026112800")
    result = cluster.fire()
    assert result.returncode == 0 and "jingle-preprocess-2026112800 finished" in result.stdout


def test_a_failed_job_fails_the_firing(cluster):
    result = cluster.fire(FAKE_RAY_JOB="fails")
    assert result.returncode == 1
    assert "disk full" in result.stdout and "failed (ray job submit exited 1)" in result.stderr


def test_a_failed_submission_shows_rays_reason(cluster):
    result = cluster.fire(FAKE_RAY_JOB="unreachable")
    assert result.returncode == 1 and "Failed to connect to Ray" in result.stdout


def test_a_busy_shard_folder_exits_75(cluster):
    result = cluster.fire(FAKE_RAY_JOB="busy")
    assert result.returncode == 75, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1].startswith("jingle-preprocess: ") and "still writes" in result.stdout


def test_settings_come_from_the_env_file_and_ray_from_jingle_python(cluster, tmp_path):
    env_file = tmp_path / "preprocess.env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in cluster.settings.items())
                        + "JINGLE_PYTHON=" + str(tmp_path / "venv" / "bin" / "python") + "\n")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    cluster.install(tmp_path / "venv" / "bin")
    (cluster.bin / "ray").unlink()  # only JINGLE_PYTHON's folder has a ray
    unset = dict.fromkeys(cluster.settings)
    result = cluster.fire(JINGLE_ENV_FILE=str(env_file), **unset)
    assert result.returncode == 0, result.stdout + result.stderr
    assert cluster.calls()[0]["args"][3] == "http://head:8265"


@pytest.mark.parametrize("missing", ["RAY_ADDRESS", "JINGLE_DIR", "JINGLE_PAIRS", "JINGLE_OUT"])
def test_a_missing_setting_is_one_line(cluster, missing):
    result = cluster.fire(**{missing: None})
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"jingle-preprocess: {missing} is not set: see deploy/README.md"]
    assert cluster.calls() == []


def test_no_token_is_one_line(cluster):
    (cluster.home / ".ray" / "auth_token").unlink()
    result = cluster.fire()
    assert result.returncode == 2 and "no cluster token" in result.stderr and cluster.calls() == []
    elsewhere = cluster.root / "token"
    elsewhere.write_text("fake-token")
    assert cluster.fire(RAY_AUTH_TOKEN_PATH=str(elsewhere)).returncode == 0


def test_the_refusal_is_rays_own_words():
    assert ray_refusal_template().format(submission_id="X") == (
        "Job with submission_id X already exists. Please use a different submission_id.")

