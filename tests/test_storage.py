"""Run storage: URI checks, mirroring a run folder and copying it back (file:// URIs, which
take the same pyarrow code path as s3:// or gs://)."""

from __future__ import annotations

import pytest

from metaray.config import ConfigError
from metaray.storage import STATE_FILE, RunMirror, check_storage, download_run, latest_checkpoint


def make_run(folder):
    (folder / "checkpoints" / "iter_000001").mkdir(parents=True)
    (folder / "checkpoints" / "iter_000001" / STATE_FILE).write_text('{"iteration": 1}')
    (folder / "checkpoints" / "iter_000002").mkdir()  # cut off before its state file
    (folder / "config.yaml").write_text("name: x\n")
    (folder / "events.out.tfevents.1").write_bytes(b"\0\1")
    return folder


def test_mirror_then_download_round_trip(tmp_path):
    run = make_run(tmp_path / "local" / "run")
    mirror = RunMirror(run, f"file://{tmp_path}/remote/run/")
    mirror.upload_logs()
    mirror.upload("checkpoints/iter_000001", "checkpoints/iter_000002")
    assert (tmp_path / "remote" / "run" / "events.out.tfevents.1").read_bytes() == b"\0\1"
    download_run(f"file://{tmp_path}/remote/run", tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "config.yaml").read_text() == "name: x\n"
    assert latest_checkpoint(tmp_path / "elsewhere").name == "iter_000001"  # the incomplete one is skipped


def test_download_of_something_that_is_no_run(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a run folder"):
        download_run(f"file://{tmp_path}/empty", tmp_path / "local")
    assert not (tmp_path / "local").exists()


@pytest.mark.parametrize("location, message", [
    ("nosuchfs://bucket/runs", "not a storage URI pyarrow can open"),
    ("file://{file}", "is a file, not a folder"),
    ("{file}", "exists and is not a folder"),
])
def test_unusable_storage_is_a_config_error(tmp_path, location, message):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=message):
        check_storage(location.format(file=tmp_path / "file"))


def test_usable_storage(tmp_path):
    check_storage(f"file://{tmp_path}/not/yet/there")
    check_storage(str(tmp_path / "new"))
    assert not (tmp_path / "new").exists()  # checking creates nothing
