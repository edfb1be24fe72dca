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

from pathlib import Path

import pyarrow.fs

from metaray.config import ConfigError

#: Written last into each checkpoint folder: the run's counters; marks the checkpoint complete.
STATE_FILE = "metaray_state.json"


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder (one a killed driver finished writing)."""
    checkpoints = sorted((run_dir / "checkpoints").glob("iter_*"))
    complete = [c for c in checkpoints if (c / STATE_FILE).is_file()]
    return complete[-1] if complete else None


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
