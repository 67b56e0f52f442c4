"""Finding and checking WAV pairs before any audio is decoded.

Two layouts are accepted (ARCHITECTURE.md, "Input layouts"):

- a folder ``ROOT/input/<name>.wav`` with ``ROOT/target/<name>.wav``, matched by relative
  path (sub-folders allowed); the pair id is the relative path without its extension;
- a CSV or JSONL manifest with columns ``input`` and ``target`` (paths relative to the
  manifest's folder) and an optional ``pair_id``.

Everything here reads headers only, so it is cheap enough for the driver.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from datasets.audio import AudioError, AudioInfo, Segmenting, probe

AUDIO_SUFFIXES = (".wav", ".wave")


class InputError(ValueError):
    """The input as a whole is unusable (missing folder, unreadable manifest): exit 2."""


@dataclass(frozen=True)
class Reject:
    """A file that was not used, with a reason a person can act on."""

    pair_id: str
    path: str
    reason: str
    stage: str  # "discovery", "probe" or "decode"


@dataclass(frozen=True)
class FusionPair:
    pair_id: str
    input_path: str
    target_path: str


@dataclass(frozen=True)
class CheckedPair:
    """A pair whose headers were read; ``fingerprint`` changes when either file does."""

    pair: FusionPair
    input_info: AudioInfo
    target_info: AudioInfo
    fingerprint: str

    @property
    def seconds(self) -> float:
        return min(self.input_info.seconds, self.target_info.seconds)


@dataclass
class Discovery:
    pairs: list[FusionPair] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def discover_fusion_pairs(source: str | os.PathLike) -> Discovery:
    """List the pairs of a folder or manifest; unmatched files become rejects.

    Raises:
        InputError: ``source`` does not exist, or is neither a pairs folder nor a manifest.
    """
    source = Path(source)
    if not source.exists():
        raise InputError(f"--pairs {source} does not exist")
    if source.is_dir():
        return _discover_folder(source)
    if source.suffix.lower() in (".csv", ".jsonl"):
        return _discover_manifest(source)
    raise InputError(f"--pairs {source} is neither a folder with input/ and target/ nor a .csv/.jsonl manifest")


def _audio_files(folder: Path) -> dict[str, Path]:
    """Relative path without extension -> file, for every WAV below ``folder``."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        # a directory named like a WAV is reported rather than walked
        for name in sorted(filenames + [d for d in dirnames if d.lower().endswith(AUDIO_SUFFIXES)]):
            if name.lower().endswith(AUDIO_SUFFIXES):
                path = Path(dirpath) / name
                relative = path.relative_to(folder)
                found[str(relative.with_suffix("")).replace(os.sep, "/")] = path
    return found


def _discover_folder(root: Path) -> Discovery:
    input_dir, target_dir = root / "input", root / "target"
    missing = [str(d) for d in (input_dir, target_dir) if not d.is_dir()]
    if missing:
        raise InputError(f"--pairs {root}: expected folders {root}/input and {root}/target ({', '.join(missing)} missing)")
    inputs, targets = _audio_files(input_dir), _audio_files(target_dir)
    found = Discovery()
    for pair_id in sorted(inputs.keys() | targets.keys()):
        if pair_id not in targets:
            expected = target_dir / inputs[pair_id].relative_to(input_dir)
            found.rejects.append(Reject(pair_id, str(inputs[pair_id]), f"no target: expected {expected}", "discovery"))
        elif pair_id not in inputs:
            expected = input_dir / targets[pair_id].relative_to(target_dir)
            found.rejects.append(Reject(pair_id, str(targets[pair_id]), f"no input: expected {expected}", "discovery"))
        else:
            found.pairs.append(FusionPair(pair_id, str(inputs[pair_id]), str(targets[pair_id])))
    return found


def _read_manifest_rows(manifest: Path) -> list[dict]:
    try:
        text = manifest.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"--pairs {manifest}: cannot read manifest ({error})") from None
    if manifest.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        columns = set(rows[0]) if rows else set()
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"--pairs {manifest}: line {number} is not JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"--pairs {manifest}: line {number} is not a JSON object")
            rows.append(row)
        columns = set().union(*rows) if rows else set()
    if rows and not {"input", "target"} <= columns:
        raise InputError(f"--pairs {manifest}: needs columns 'input' and 'target', found {sorted(columns)}")
    return rows


def _discover_manifest(manifest: Path) -> Discovery:
    base = manifest.parent
    found = Discovery()
    seen: set[str] = set()
    for number, row in enumerate(_read_manifest_rows(manifest), start=1):
        input_value, target_value = (row.get("input") or "").strip(), (row.get("target") or "").strip()
        pair_id = str(row.get("pair_id") or "").strip() or str(Path(input_value).with_suffix("")) or f"row{number}"
        if not input_value or not target_value:
            found.rejects.append(Reject(pair_id, str(manifest), f"row {number}: empty input or target", "discovery"))
            continue
        if pair_id in seen:
            found.rejects.append(Reject(pair_id, str(base / input_value), f"row {number}: duplicate pair_id {pair_id!r}", "discovery"))
            continue
        seen.add(pair_id)
        found.pairs.append(FusionPair(pair_id, str(base / input_value), str(base / target_value)))
    return found


def check_pairs(pairs: list[FusionPair], segmenting: Segmenting) -> tuple[list[CheckedPair], list[Reject]]:
    """Read both headers of every pair; reject unreadable, truncated or too-short files."""
    checked, rejects = [], []
    minimum = segmenting.min_seconds()
    for pair in pairs:
        infos, bad = {}, False
        for role, path in (("input", pair.input_path), ("target", pair.target_path)):
            try:
                infos[role] = probe(path)
            except AudioError as error:
                rejects.append(Reject(pair.pair_id, path, f"{role}: {error}", "probe"))
                bad = True
        if bad:
            continue
        for role in ("input", "target"):
            if infos[role].seconds < minimum:
                rejects.append(
                    Reject(
                        pair.pair_id,
                        infos[role].path,
                        f"{role}: shorter than one segment ({infos[role].seconds:.2f} s < {minimum:g} s)",
                        "probe",
                    )
                )
                bad = True
        if not bad:
            checked.append(CheckedPair(pair, infos["input"], infos["target"], fingerprint_files(pair.input_path, pair.target_path)))
    return checked, rejects


def fingerprint_files(*paths: str) -> str:
    """Changes when any file's path, size or modification time does (no content read)."""
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{os.path.abspath(path)}|missing\n".encode())
    return digest.hexdigest()[:20]
