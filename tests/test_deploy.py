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


def unit_entries(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: sections of keys, each with every value it was given."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in (DEPLOY / name).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


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
    # the script reads the settings itself, as under cron: systemd's EnvironmentFile= would apply
    # LD_PRELOAD or BASH_ENV from it before the script could refuse them
    assert service["Type"] == "oneshot" and service["Environment"] == f"JINGLE_ENV_FILE={ENV_FILE}"
    assert "EnvironmentFile" not in service
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
import json, os, sys, tempfile
state = os.environ["FAKE_RAY_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls.jsonl"), "a") as calls:
    calls.write(json.dumps({{"args": args, "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE"), "env": dict(os.environ),
                            "temporary_files": sorted(os.listdir(tempfile.gettempdir()))}}) + "\\n")
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



# The settings file: data read the way systemd's EnvironmentFile= reads it, never shell code.

def settings_file(folder: Path, text: str, name: str = "preprocess.env") -> Path:
    path = folder / name
    path.write_bytes(text.encode())
    path.chmod(0o644)
    return path


def fire_with(cluster: FakeCluster, env_file: Path, **overrides: str | None) -> subprocess.CompletedProcess:
    """A firing whose settings come from ``env_file`` only (none from the environment)."""
    return cluster.fire(JINGLE_ENV_FILE=str(env_file), **{**dict.fromkeys(cluster.settings), **overrides})


# What the fake `ray` finds in its environment that no settings file put there: what bash hands
# every child, and the locale that Python's C-locale coercion (PEP 538) sets in its own.
NOT_FROM_THE_FILE = {"_", "SHLVL", "PWD", "OLDPWD", "LC_CTYPE"}


def test_the_settings_file_sets_exactly_its_variables_as_literal_text(cluster, tmp_path):
    markers = [tmp_path / f"marker-{n}" for n in range(4)]
    token = cluster.root / "token"
    token.write_text("fake-token")
    env_file = settings_file(tmp_path, f"""\
# the head's dashboard (port 8265 must be reachable from here)
RAY_ADDRESS=http://head:8265

   ; an indented comment in systemd's other style
JINGLE_DIR = {ROOT}
JINGLE_PAIRS="/mnt/jingle pairs/new"
JINGLE_OUT='s3://bucket/jingle/shards'
JINGLE_NOTE=$(touch {markers[0]})
JINGLE_NOTE_TICKS=`touch {markers[1]}`
JINGLE_NOTE_QUOTED="$(touch {markers[2]}) \\`touch {markers[3]}\\` \\"$HOME\\" \\\\ \\n"
JINGLE_NOTE_SINGLE='$HOME `x` "y" \\n'
JINGLE_NOTE_ESCAPED=a\\ b\\$HOME#not-a-comment
JINGLE_EMPTY=
RAY_AUTH_TOKEN_PATH={token}\r
""")
    base = {"PATH": f"{cluster.bin}:/usr/bin:/bin", "HOME": str(cluster.home), "FAKE_RAY_STATE": str(cluster.root),
            "JINGLE_ENV_FILE": str(env_file)}
    result = fire_with(cluster, env_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not [marker for marker in markers if marker.exists()], "a value in the settings file ran as a command"
    [call] = cluster.calls()
    changed = {key: value for key, value in call["env"].items() if base.get(key) != value and key not in NOT_FROM_THE_FILE}
    assert changed == {
        "RAY_ADDRESS": "http://head:8265",
        "JINGLE_DIR": str(ROOT),
        "JINGLE_PAIRS": "/mnt/jingle pairs/new",
        "JINGLE_OUT": "s3://bucket/jingle/shards",
        "JINGLE_NOTE": f"$(touch {markers[0]})",
        "JINGLE_NOTE_TICKS": f"`touch {markers[1]}`",
        "JINGLE_NOTE_QUOTED": f'$(touch {markers[2]}) `touch {markers[3]}` "$HOME" \\ \\n',
        "JINGLE_NOTE_SINGLE": '$HOME `x` "y" \\n',
        "JINGLE_NOTE_ESCAPED": "a b$HOME#not-a-comment",
        "JINGLE_EMPTY": "",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_AUTH_MODE": "token",  # the script's own
    }


def test_quoted_values_keep_their_spaces_as_one_argument(cluster, tmp_path):
    env_file = settings_file(tmp_path, f"""\
RAY_ADDRESS=http://head:8265
JINGLE_DIR={ROOT}
JINGLE_PAIRS="  /mnt/my pairs  "
JINGLE_OUT='/mnt/my shards/*'
""")
    result = fire_with(cluster, env_file)
    assert result.returncode == 0, result.stdout + result.stderr
    args = cluster.calls()[0]["args"]
    assert args[args.index("--pairs") + 1] == "  /mnt/my pairs  " and args[args.index("--out") + 1] == "/mnt/my shards/*"


@pytest.mark.parametrize("line, reason", [
    ("export JINGLE_OUT=/mnt/shards", "'export' is shell syntax"),
    ("JINGLE_OUT", "not a KEY=VALUE line"),
    ("JINGLE-OUT=/mnt/shards", "is not a variable name"),
    ("1JINGLE=/mnt/shards", "is not a variable name"),
    ('JINGLE_OUT="/mnt/shards', "unclosed double quote"),
    ("JINGLE_OUT='/mnt/shards", "unclosed single quote"),
    ('JINGLE_OUT="/mnt/"shards', "text after the closing double quote"),
    ("JINGLE_OUT=/mnt/shards \\", "ends in a backslash"),
    ("JINGLE_OUT=/mnt/shards  # where shards go", "part of the value to systemd"),
    ("# a comment that goes on \\", "comment ending in a backslash"),
    ("LD_PRELOAD=/tmp/evil.so", "changes which code"),
    ("BASH_ENV=/tmp/evil.sh", "changes which code"),
    ("PATH=/tmp/evil:/usr/bin:/bin", "changes which code"),
    ("PYTHONPATH=/tmp/evil", "changes which code"),
    ("EUID=0", "read-only"),
])
def test_a_line_outside_the_format_exits_2_naming_file_and_line(cluster, tmp_path, line, reason):
    marker = tmp_path / "ran"
    env_file = settings_file(tmp_path, f"RAY_ADDRESS=http://head:8265\n\n{line}\nJINGLE_NOTE=$(touch {marker})\n")
    result = fire_with(cluster, env_file)
    assert result.returncode == 2, result.stdout + result.stderr
    [message] = result.stderr.splitlines()
    assert message.startswith(f"jingle-preprocess: {env_file}:3: ") and reason in message, message
    assert result.stdout == "" and cluster.calls() == [] and not marker.exists()


def test_a_settings_file_others_may_write_is_refused(cluster, tmp_path):
    env_file = settings_file(tmp_path, "".join(f"{key}={value}\n" for key, value in cluster.settings.items()))
    env_file.chmod(0o664)
    result = fire_with(cluster, env_file)
    assert result.returncode == 2 and result.stderr.splitlines() == [
        f"jingle-preprocess: {env_file}: group or others may write it (mode 664): chmod go-w {env_file}"]
    assert cluster.calls() == []
    env_file.chmod(0o640)
    assert fire_with(cluster, env_file).returncode == 0


def test_jingle_python_must_be_an_absolute_path(cluster):
    # relative, it would put the working folder (cron: the home folder) first on PATH
    result = cluster.fire(JINGLE_PYTHON="venv/bin/python")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and "absolute path" in result.stderr
    assert cluster.calls() == []


def test_the_cron_line_and_the_service_run_the_same_script_on_the_same_file():
    [cron] = [line for line in (DEPLOY / "jingle-preprocess.cron").read_text().splitlines()
              if line.strip() and not line.lstrip().startswith("#")]
    service = unit_entries("jingle-preprocess.service")["Service"]
    assert f"JINGLE_ENV_FILE={ENV_FILE} {service['ExecStart'][-1]} " in cron
    assert service["Environment"] == [f"JINGLE_ENV_FILE={ENV_FILE}"]
    # the script is the one reader: no sourcing of the file anywhere in deploy/
    assert not re.search(r'(?m)^\s*(\.|source)\s+["$]', SCRIPT.read_text())


# The unit's sandbox.

HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "UMask": "0077",
    "ProtectSystem": "strict",
    "ProtectHome": "read-only",  # the token is ~/.ray/auth_token: readable, never writable
    "PrivateTmp": "yes",
    "PrivateMounts": "yes",
    "PrivateDevices": "yes",
    "ProtectProc": "invisible",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "RestrictSUIDSGID": "yes",
    "RestrictRealtime": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "SystemCallArchitectures": "native",
    "SystemCallFilter": "@system-service",
    "SystemCallErrorNumber": "EPERM",
}


def test_the_service_is_hardened():
    service = unit_entries("jingle-preprocess.service")["Service"]
    assert {key: service.get(key) for key in HARDENING} == {key: [value] for key, value in HARDENING.items()}
    assert service["User"] == ["jingle"] and "DynamicUser" not in service  # the token lives in its home
    assert "RemoveIPC" not in service  # would remove a same-account Ray node's shared memory


def test_the_sandbox_lets_the_script_write_where_it_writes(cluster, tmp_path):
    """What the script writes, it writes under TMPDIR; the unit leaves only a private /tmp
    (and ReadWritePaths=) writable, and sets no TMPDIR, so its temporary files land there."""
    service = unit_entries("jingle-preprocess.service")["Service"]
    assert service["ProtectSystem"] == ["strict"] and service["PrivateTmp"] == ["yes"]
    assert not any(value.startswith("TMPDIR=") for value in service.get("Environment", []))
    writable = ["/tmp", "/var/tmp", *" ".join(service.get("ReadWritePaths", [])).split()]
    checkout, work, temporary = tmp_path / "checkout", tmp_path / "cwd", tmp_path / "tmp"
    for folder in (checkout / "pipelines", work, temporary):
        folder.mkdir(parents=True)
    watched = (checkout, work, cluster.home)

    def snapshot() -> dict[str, tuple[int, int]]:
        return {str(path): (path.stat().st_mtime_ns, path.stat().st_size)
                for folder in watched for path in [folder, *folder.rglob("*")]}

    before = snapshot()
    env = {"PATH": f"{cluster.bin}:/usr/bin:/bin", "HOME": str(cluster.home), "FAKE_RAY_STATE": str(cluster.root),
           "TMPDIR": str(temporary), **cluster.settings, "JINGLE_DIR": str(checkout)}
    result = subprocess.run([str(SCRIPT)], env=env, cwd=work, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot() == before, "the script wrote outside TMPDIR"
    [call] = cluster.calls()
    assert call["temporary_files"], "the held-back output was not under TMPDIR"
    assert list(temporary.iterdir()) == [], "the script left a temporary file behind"
    assert "/tmp" in writable


def test_systemd_rates_the_hardened_service(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not on PATH")
    service = tmp_path / "jingle-preprocess.service"
    service.write_text(re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", (DEPLOY / service.name).read_text()))
    result = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(service)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    if match is None:
        pytest.skip(f"systemd-analyze security --offline is not available here: {result.stderr.strip()[:300]}")
    # 9.2 (UNSAFE) before the hardening, 1.6 (OK) with it (systemd 252)
    assert float(match.group(1)) <= 3.0, result.stdout
