"""Finding and checking WAV pairs before any audio is decoded.

Two layouts are accepted for each model (ARCHITECTURE.md, "Input layouts"):

- a folder ``ROOT/input/<name>.wav`` with ``ROOT/target/<name>.wav`` (fusion), or
  ``ROOT/raw/<name>.wav`` with ``ROOT/edit/<name>.wav`` and optionally
  ``ROOT/pointers/<name>.npy`` or ``ROOT/edl/<name>.json`` (pointer), matched by relative
  path (sub-folders allowed); the pair id is the relative path without its extension;
- a CSV or JSONL manifest with the same role names as columns (``input``/``target``, or
  ``raw``/``edit`` and optional ``pointers``/``edl``; paths relative to the manifest's
  folder) and an optional ``pair_id``.

Everything here reads headers only, so it is cheap enough for the driver.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from jingle.datasets.audio import AudioError, AudioInfo, Segmenting, probe

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
    """An input and a target, and the pair's reference arrangement when one is given
    (``arrangement/<name>.wav`` beside ``input/`` and ``target/``, or a manifest's
    ``arrangement`` column): a hand-made or rendered arrangement that training can learn
    from (``losses.teacher_weight``)."""

    pair_id: str
    input_path: str
    target_path: str
    arrangement_path: str | None = None


@dataclass(frozen=True)
class PointerPair:
    """A raw recording, its edit, and the edit's labels when given (else alignment)."""

    pair_id: str
    raw_path: str
    edit_path: str
    pointers_path: str | None = None
    edl_path: str | None = None

    @property
    def label_paths(self) -> list[str]:
        return [path for path in (self.pointers_path, self.edl_path) if path]


@dataclass(frozen=True)
class CheckedPair:
    """A pair whose headers were read; ``fingerprint`` changes when either file does."""

    pair: FusionPair
    input_info: AudioInfo
    target_info: AudioInfo
    fingerprint: str  # of every file of the pair, the arrangement included

    @property
    def seconds(self) -> float:
        return min(self.input_info.seconds, self.target_info.seconds)


@dataclass
class Discovery:
    pairs: list = field(default_factory=list)  # FusionPair or PointerPair
    rejects: list[Reject] = field(default_factory=list)


# Pointer labels: one file per pair, beside the audio folders.
POINTER_LABELS = {"pointers": ".npy", "edl": ".json"}
# A fusion pair's optional reference arrangement: audio (any WAV suffix), beside input/ and target/.
FUSION_LABELS = {"arrangement": AUDIO_SUFFIXES}


def discover_fusion_pairs(source: str | os.PathLike) -> Discovery:
    """List the fusion pairs of a folder or manifest; unmatched files become rejects.

    Raises:
        InputError: ``source`` does not exist, or is neither a pairs folder nor a manifest.
    """
    found = _discover(source, ("input", "target"), labels=FUSION_LABELS)
    pairs = [FusionPair(pair_id, paths["input"], paths["target"], paths.get("arrangement")) for pair_id, paths in found.pairs]
    return Discovery(pairs, found.rejects)


def discover_pointer_pairs(source: str | os.PathLike) -> Discovery:
    """List the pointer pairs (raw, edit, optional labels) of a folder or manifest.

    A pair with both a pointers file and an EDL is rejected: they may disagree, and
    neither can be preferred silently.
    """
    found = _discover(source, ("raw", "edit"), labels=POINTER_LABELS)
    pairs = []
    for pair_id, paths in found.pairs:
        pair = PointerPair(pair_id, paths["raw"], paths["edit"], paths.get("pointers"), paths.get("edl"))
        if len(pair.label_paths) > 1:
            found.rejects.append(
                Reject(pair_id, pair.edl_path, "both pointers/ and edl/ label this pair; keep one of them", "discovery")
            )
            continue
        pairs.append(pair)
    return Discovery(pairs, found.rejects)


def _discover(source: str | os.PathLike, roles: tuple[str, str], labels: dict[str, str | tuple[str, ...]] | None = None) -> Discovery:
    """(pair id, role -> path) of every complete pair, and rejects for the rest."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"--pairs {source} does not exist")
    if source.is_dir():
        return _discover_folder(source, roles, labels or {})
    if source.suffix.lower() in (".csv", ".jsonl"):
        return _discover_manifest(source, roles, labels or {})
    raise InputError(f"--pairs {source} is neither a folder with {roles[0]}/ and {roles[1]}/ nor a .csv/.jsonl manifest")


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


def _label_files(folder: Path, suffix: str | tuple[str, ...]) -> dict[str, Path]:
    if isinstance(suffix, tuple):  # audio: every WAV below the folder
        return _audio_files(folder) if folder.is_dir() else {}
    found = {}
    for path in sorted(folder.rglob(f"*{suffix}")) if folder.is_dir() else []:
        found[str(path.relative_to(folder).with_suffix("")).replace(os.sep, "/")] = path
    return found


def _discover_folder(root: Path, roles: tuple[str, str], labels: dict[str, str | tuple[str, ...]]) -> Discovery:
    first, second = roles
    first_dir, second_dir = root / first, root / second
    missing = [str(d) for d in (first_dir, second_dir) if not d.is_dir()]
    if missing:
        raise InputError(f"--pairs {root}: expected folders {root}/{first} and {root}/{second} ({', '.join(missing)} missing)")
    firsts, seconds = _audio_files(first_dir), _audio_files(second_dir)
    label_files = {name: _label_files(root / name, suffix) for name, suffix in labels.items()}
    found = Discovery()
    for pair_id in sorted(firsts.keys() | seconds.keys()):
        if pair_id not in seconds:
            expected = second_dir / firsts[pair_id].relative_to(first_dir)
            found.rejects.append(Reject(pair_id, str(firsts[pair_id]), f"no {second}: expected {expected}", "discovery"))
        elif pair_id not in firsts:
            expected = first_dir / seconds[pair_id].relative_to(second_dir)
            found.rejects.append(Reject(pair_id, str(seconds[pair_id]), f"no {first}: expected {expected}", "discovery"))
        else:
            paths = {first: str(firsts[pair_id]), second: str(seconds[pair_id])}
            paths.update({name: str(files[pair_id]) for name, files in label_files.items() if pair_id in files})
            found.pairs.append((pair_id, paths))
    for name, files in label_files.items():
        for pair_id in sorted(files.keys() - firsts.keys() - seconds.keys()):
            found.rejects.append(Reject(pair_id, str(files[pair_id]), f"{name} file without a {first}/{second} pair", "discovery"))
    return found


def _read_manifest_rows(manifest: Path, roles: tuple[str, str]) -> list[dict]:
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
    if rows and not set(roles) <= columns:
        raise InputError(f"--pairs {manifest}: needs columns '{roles[0]}' and '{roles[1]}', found {sorted(columns)}")
    return rows


def _discover_manifest(manifest: Path, roles: tuple[str, str], labels: dict[str, str | tuple[str, ...]]) -> Discovery:
    base = manifest.parent
    found = Discovery()
    seen: set[str] = set()
    for number, row in enumerate(_read_manifest_rows(manifest, roles), start=1):
        values = {role: str(row.get(role) or "").strip() for role in (*roles, *labels)}
        pair_id = str(row.get("pair_id") or "").strip() or str(Path(values[roles[0]]).with_suffix("")) or f"row{number}"
        if not values[roles[0]] or not values[roles[1]]:
            found.rejects.append(Reject(pair_id, str(manifest), f"row {number}: empty {roles[0]} or {roles[1]}", "discovery"))
            continue
        if pair_id in seen:
            found.rejects.append(Reject(pair_id, str(base / values[roles[0]]), f"row {number}: duplicate pair_id {pair_id!r}", "discovery"))
            continue
        seen.add(pair_id)
        found.pairs.append((pair_id, {role: str(base / value) for role, value in values.items() if value}))
    return found


def check_pairs(pairs: list[FusionPair], segmenting: Segmenting) -> tuple[list[CheckedPair], list[Reject]]:
    """Read both headers of every pair; reject unreadable, truncated or too-short files."""
    checked, rejects = [], []
    minimum = segmenting.min_seconds()
    for pair in pairs:
        infos, bad = {}, False
        roles = (("input", pair.input_path), ("target", pair.target_path))
        if pair.arrangement_path:
            roles += (("arrangement", pair.arrangement_path),)
        for role, path in roles:
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
            files = [pair.input_path, pair.target_path] + ([pair.arrangement_path] if pair.arrangement_path else [])
            checked.append(CheckedPair(pair, infos["input"], infos["target"], fingerprint_files(*files)))
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


@dataclass(frozen=True)
class CheckedPointerPair:
    """A pointer pair whose headers were read; the fingerprint covers the label file too."""

    pair: PointerPair
    raw_info: AudioInfo
    edit_info: AudioInfo
    fingerprint: str

    @property
    def seconds(self) -> float:
        return self.raw_info.seconds + self.edit_info.seconds


def check_pointer_pairs(pairs: list[PointerPair]) -> tuple[list[CheckedPointerPair], list[Reject]]:
    """Read the raw and edit headers of every pair; reject unreadable or truncated files."""
    checked, rejects = [], []
    for pair in pairs:
        infos = {}
        for role, path in (("raw", pair.raw_path), ("edit", pair.edit_path)):
            try:
                infos[role] = probe(path)
            except AudioError as error:
                rejects.append(Reject(pair.pair_id, path, f"{role}: {error}", "probe"))
        if len(infos) == 2:
            fingerprint = fingerprint_files(pair.raw_path, pair.edit_path, *pair.label_paths)
            checked.append(CheckedPointerPair(pair, infos["raw"], infos["edit"], fingerprint))
    return checked, rejects
