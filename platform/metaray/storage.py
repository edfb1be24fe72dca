"""Where run folders live: a local or shared path, or a URI that pyarrow can write to.

``--storage /mnt/shared/runs`` (a path every node mounts, e.g. NFS) holds run folders
directly. ``--storage s3://bucket/runs`` (or ``gs://``, ``hdfs://``, ``file://``...) keeps
the run folder on the driver's disk and mirrors it to ``<URI>/<run name>`` after every
checkpoint and at the end, so a driver on any node can ``--resume <URI>/<run name>``: the
mirror is copied back first. Mirroring from the driver (rather than handing the URI to RLlib)
also works when remote Learners sit on other nodes, and carries the TensorBoard events and
summary.json along with the checkpoints.

Example:
    >>> is_uri("s3://bucket/runs"), is_uri("/mnt/shared/runs")
    (True, False)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Protocol

import pyarrow.fs
import yaml

from metaray.config import ConfigError, ExperimentConfig

#: Written last into each checkpoint folder: the run's counters; marks the checkpoint complete.
STATE_FILE = "metaray_state.json"
#: The resolved config of a run folder; creating it (exclusively) claims the folder for one run.
CONFIG_FILE = "config.yaml"
#: Files of a training run (config.yaml) or an evaluation report (report.md, summary.json):
#: a new run or report never writes into a folder that holds one.
RESULT_FILES = (CONFIG_FILE, "summary.json", "report.md")


class CheckpointError(Exception):
    """A checkpoint that does not load (truncated or corrupt files): bad input, exit code 2."""


class Restorable(Protocol):
    """What loading a checkpoint needs of an RLlib Algorithm."""

    def restore_from_path(self, path: str) -> None: ...


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def one_line(exc: BaseException) -> str:
    """An exception as ``Type: first line of its message``, for one-line error reports.

    >>> one_line(ValueError("pickle data was truncated\\n  more detail"))
    'ValueError: pickle data was truncated'
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """The complete checkpoints of a run folder (those a killed driver finished writing), newest first."""
    checkpoints = sorted((run_dir / "checkpoints").glob("iter_*"), reverse=True)
    return [c for c in checkpoints if (c / STATE_FILE).is_file()]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder (it may still fail to load: see :func:`restore_latest`)."""
    complete = complete_checkpoints(run_dir)
    return complete[0] if complete else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    """The run counters saved with a checkpoint; :class:`CheckpointError` if they cannot be read."""
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{checkpoint}: {STATE_FILE} unreadable ({one_line(exc)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("iteration"), int):
        raise CheckpointError(f"{checkpoint}: {STATE_FILE} holds no iteration counter")
    return state


def load_checkpoint(algo: Restorable, checkpoint: Path) -> None:
    """Restore ``algo`` from ``checkpoint``; :class:`CheckpointError` naming it and the cause if it does not load."""
    try:
        algo.restore_from_path(str(checkpoint.resolve()))
    except Exception as exc:  # noqa: BLE001 - unpickling a damaged file can raise almost anything
        raise CheckpointError(f"{checkpoint} does not load ({one_line(exc)})") from exc


def restore_latest(algo: Restorable, run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Restore the newest checkpoint of ``run_dir`` that loads and return it with its counters.

    Each newer one that does not load (truncated files, an empty state file) is skipped with a
    line on stderr saying why; :class:`CheckpointError`, naming every checkpoint tried and its
    cause, when none loads. Nothing in ``run_dir`` is written.
    """
    skipped = []
    for checkpoint in complete_checkpoints(run_dir):
        try:
            state = read_state(checkpoint)
            load_checkpoint(algo, checkpoint)
        except CheckpointError as exc:
            skipped.append(str(exc))
            continue
        for reason in skipped:
            print(f"skipped checkpoint {reason}", file=sys.stderr)
        return checkpoint, state
    raise CheckpointError(f"--resume {run_dir}: no checkpoint loads: " + ("; ".join(skipped) or "none is complete"))


def check_fresh_folder(folder: Path, for_report: bool = False) -> None:
    """ConfigError when ``folder`` holds a training run or an evaluation report (see RESULT_FILES)."""
    held = [name for name in RESULT_FILES if (folder / name).exists()]
    if not held:
        return
    if for_report:
        advice = "--eval-only writes a new report folder: pick another --run-dir or leave it out"
    elif CONFIG_FILE in held:
        advice = f"continue it with --resume {folder} or pick another folder"
    else:
        advice = "pick another folder"
    raise ConfigError(f"--run-dir {folder} already holds a run or report ({', '.join(held)}); {advice}")


def create_run_folder(parent: Path, name: str) -> Path:
    """A new folder ``parent/name``, or ``name-2``, ``name-3``... when that one exists.

    ``mkdir`` fails atomically on an existing folder, so two launches in the same second never
    share one.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as parent:
    ...     [create_run_folder(Path(parent), "bandit-20250101-120000").name for _ in range(3)]
    ['bandit-20250101-120000', 'bandit-20250101-120000-2', 'bandit-20250101-120000-3']
    """
    try:
        parent.mkdir(parents=True, exist_ok=True)
        attempt = 1
        while True:
            folder = parent / (name if attempt == 1 else f"{name}-{attempt}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                attempt += 1
    except OSError as exc:
        raise ConfigError(f"cannot create a run folder in {parent} ({one_line(exc)})") from None


def save_config(cfg: ExperimentConfig, run_dir: Path, claim: bool = False) -> None:
    """Write ``run_dir/config.yaml`` (what ``--resume`` re-reads).

    ``claim`` is for a new run: config.yaml is then created exclusively, which is atomic, so of
    two launches naming the same folder one gets it and the other a ConfigError.
    """
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if not claim:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(text)
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / CONFIG_FILE, "x") as file:
            file.write(text)
    except OSError as exc:
        check_fresh_folder(run_dir)  # another launch claimed it first
        raise ConfigError(f"--run-dir {run_dir}: cannot write {CONFIG_FILE} there ({one_line(exc)})") from None


#: Files an RLlib Algorithm checkpoint (new API stack) must have for evaluation.
_CHECKPOINT_PARTS = ("rllib_checkpoint.json", "learner_group")


def resolve_checkpoint(path: Path) -> Path:
    """An Algorithm checkpoint folder, or a run folder's latest complete checkpoint."""
    if (path / "checkpoints").is_dir():
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise ConfigError(f"--checkpoint {path}: run folder without a complete checkpoint")
        return checkpoint
    missing = [part for part in _CHECKPOINT_PARTS if not (path / part).exists()]
    if missing:
        raise ConfigError(f"--checkpoint {path}: not an RLlib checkpoint folder (no {', '.join(missing)})")
    return path


def _filesystem(uri: str, option: str) -> tuple[pyarrow.fs.FileSystem, str]:
    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"{option} {uri}: not a storage URI pyarrow can open ({exc})".splitlines()[0]) from None


def check_storage(location: str, option: str = "--storage") -> None:
    """Fail fast (ConfigError) when run folders cannot go to ``location``."""
    if not is_uri(location):
        if Path(location).exists() and not Path(location).is_dir():
            raise ConfigError(f"{option} {location}: exists and is not a folder")
        return
    filesystem, path = _filesystem(location, option)
    try:
        info = filesystem.get_file_info(path)
    except OSError as exc:
        raise ConfigError(f"{option} {location}: cannot be reached ({exc})".splitlines()[0]) from None
    if info.type == pyarrow.fs.FileType.File:
        raise ConfigError(f"{option} {location}: is a file, not a folder")


def download_run(uri: str, local_dir: Path) -> None:
    """Copy a mirrored run folder back to ``local_dir`` (for ``--resume <URI>``)."""
    filesystem, path = _filesystem(uri, "--resume")
    if filesystem.get_file_info(f"{path}/config.yaml").type != pyarrow.fs.FileType.File:
        raise ConfigError(f"--resume {uri}: no config.yaml there, not a run folder")
    local_dir.mkdir(parents=True, exist_ok=True)
    pyarrow.fs.copy_files(path, str(local_dir.resolve()), source_filesystem=filesystem)


class RunMirror:
    """Copies files of a local run folder to the same relative paths under a URI."""

    def __init__(self, run_dir: Path, uri: str):
        self.run_dir = run_dir
        self.uri = uri.rstrip("/")
        self.filesystem, self.path = _filesystem(self.uri, "--storage")

    def upload(self, *relative: str | Path) -> None:
        for rel in relative:
            source = (self.run_dir / rel).resolve()
            target = f"{self.path}/{Path(rel).as_posix()}"
            self.filesystem.create_dir(target if source.is_dir() else target.rsplit("/", 1)[0], recursive=True)
            pyarrow.fs.copy_files(str(source), target, destination_filesystem=self.filesystem)

    def upload_logs(self) -> None:
        """config.yaml, summary.json (once written) and the TensorBoard event files."""
        names = [p.name for p in self.run_dir.iterdir() if p.is_file()]
        self.upload(*names)
