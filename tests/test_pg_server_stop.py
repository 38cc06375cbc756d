"""`python -m tests.pg_server stop` deletes only a folder it made (an empty --dir once deleted a checkout)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_stop_with_an_empty_dir_refuses_and_deletes_nothing(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    proc = subprocess.run([sys.executable, "-m", "tests.pg_server", "stop", "--dir", ""], cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "--dir" in proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_stop_leaves_a_folder_that_holds_more_than_a_server(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "server.log").write_text("")
    (tmp_path / "notes.md").write_text("mine")
    proc = subprocess.run([sys.executable, "-m", "tests.pg_server", "stop", "--dir", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "notes.md").read_text() == "mine"
    (tmp_path / "notes.md").unlink()
    subprocess.run([sys.executable, "-m", "tests.pg_server", "stop", "--dir", str(tmp_path)], cwd=ROOT, check=True,
                   capture_output=True, timeout=60)
    assert not tmp_path.exists()  # a folder of only what `start` makes is removed
