"""The benchmarks' own machinery, where a mistake would skew what they report."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.backend import group_nice

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import classroom  # noqa: E402


def reporting_browser(folder: Path) -> Path:
    """A stand-in for chromium that prints its niceness and its scheduling group's."""
    script = folder / "fake-chromium"
    script.write_text("#!/bin/sh\nnice\ncat /proc/$$/autogroup\n")
    script.chmod(0o755)
    return script


NEEDS_SETPRIV = pytest.mark.skipif(os.geteuid() == 0 and shutil.which("setpriv") is None,
                                   reason="--browser-nice as root needs setpriv (util-linux)")


@NEEDS_SETPRIV
@pytest.mark.skipif(not os.path.exists("/proc/self/autogroup"), reason="this kernel has no scheduling autogroups")
def test_the_niced_browser_lowers_its_own_group_and_never_the_benchs(tmp_path, monkeypatch):
    monkeypatch.setattr(classroom, "chromium", lambda: str(reporting_browser(tmp_path)))
    wrapper = classroom.niced_chromium(10, 15, tmp_path)
    alone = subprocess.run([wrapper], start_new_session=True, capture_output=True, text=True, check=True).stdout
    nice, group = alone.split("\n", 1)
    assert nice == "10" and group.split()[-1] == "15", alone  # Playwright starts it leading a session of its own

    mine = group_nice(os.getpid())
    inside = subprocess.run([wrapper], capture_output=True, text=True, check=True).stdout
    assert inside.split("\n")[0] == "10" and group_nice(os.getpid()) == mine, inside  # the bench's group untouched


@NEEDS_SETPRIV
def test_the_browser_runs_as_found_without_niceness(tmp_path, monkeypatch):
    found = str(reporting_browser(tmp_path))
    monkeypatch.setattr(classroom, "chromium", lambda: found)
    assert classroom.niced_chromium(0, 0, tmp_path) == found
    assert classroom.niced_chromium(10, 0, tmp_path) != found  # nice alone still needs the wrapper
