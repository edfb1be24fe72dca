"""platform/ is a source folder: a platform/__init__.py would shadow the stdlib module."""

import subprocess
import sys
import sysconfig
from pathlib import Path

from conftest import ROOT


def test_platform_is_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_stdlib_platform_wins_from_repo_root():
    # Run from the repository root, where a package named 'platform' would be found first.
    out = subprocess.run(
        [sys.executable, "-c", "import platform, metaray; print(platform.__file__)"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    assert Path(out.strip()).parent == Path(sysconfig.get_paths()["stdlib"])
