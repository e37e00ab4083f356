"""A real headless Chromium for the tests: Debian's package, installed with apt-get when
it is missing (the ``chromium`` fixture in tests/conftest.py; npm likewise), and run as a command
line (``--dump-dom``, ``--screenshot``), so no browser driver is needed."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# No name resolves but the machine's own: a page cannot reach the internet, and
# Chromium's own background requests (time, accounts, updates) fail at once.
LOCAL_ONLY = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"


def find_or_install_chromium() -> str:
    return find_or_install("chromium", "chromium")


def find_or_install(command: str, package: str) -> str:
    """The path of ``command``, installing Debian's ``package`` when it is missing, as
    a fresh machine with only Python needs for the browser tests (chromium; npm to
    fetch analytics.js)."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.fail(f"{command} is missing and cannot be installed (needs root and apt-get)")
    # The suite runs in several pytest-xdist workers: one apt-get at a time (dpkg's
    # own lock makes a second one fail rather than wait), and a worker that waited
    # finds the command the first one installed.
    with (Path(tempfile.gettempdir()) / "cdp-tests-apt.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = shutil.which(command)
        if found:
            return found
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
            result = subprocess.run(step, capture_output=True, text=True, env=env, timeout=1200)
            assert result.returncode == 0, f"{' '.join(step)} failed:\n{result.stderr[-2000:]}"
    found = shutil.which(command)
    assert found, f"apt-get installed {package} but {command} is not on PATH"
    return found


def run_chromium(
    chromium: str, profile: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess:
    """One headless Chromium run with a fresh profile directory (no state shared)."""
    return subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
