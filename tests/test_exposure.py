"""What the server exposes: localhost only unless a room is asked for, and a capped upload size."""

import os
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_app_binds_localhost_and_caps_uploads():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "localhost"
    assert 0 < config["server"]["maxUploadSize"] <= 200


def test_make_classroom_binds_every_interface_and_prints_the_address():
    env = {k: v for k, v in os.environ.items() if k != "UE_SESSION_TRAININGS"}
    out = subprocess.run(["make", "-n", "classroom"], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=env).stdout
    assert "--server.address 0.0.0.0" in out and "Students open" in out
    assert "UE_SESSION_TRAININGS=6 " in out  # a room's share of trainings per session
