"""The `explorer` command: info lists the models, bad arguments fail cleanly, serve wraps panel."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from explorer import cli
from explorer.core import device, zoo


def test_info_shows_device_models_and_cache():
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "info"], capture_output=True, text=True, check=True)
    assert f"device:  {device.describe()}" in out.stdout
    assert "cache:" in out.stdout
    for name in zoo.list():
        assert name in out.stdout
    assert zoo.card("mnist-cnn").summary() in out.stdout


def test_console_script_is_installed():
    assert shutil.which("explorer") is not None


def test_unknown_fetch_target_is_refused():
    done = subprocess.run([sys.executable, "-m", "explorer.cli", "fetch", "imagenet"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "invalid choice: 'imagenet'" in done.stderr


def test_a_bad_device_override_is_reported_not_raised(monkeypatch):
    done = subprocess.run([sys.executable, "-m", "explorer.cli", "info"], capture_output=True, text=True,
                          env={**__import__("os").environ, "EXPLORER_DEVICE": "tpu"})
    assert done.returncode == 2
    assert "explorer: EXPLORER_DEVICE='tpu'" in done.stderr and "Traceback" not in done.stderr


def test_serve_wraps_panel_serve_app_py(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda command: calls.append(command) or 0)
    assert cli.main(["serve", "--port", "5100", "--num-threads", "4"]) == 0
    command = calls[0]
    assert command[1:4] == ["-m", "panel", "serve"] and command[4].endswith("app.py")
    assert command[5:] == ["--port", "5100", "--num-threads", "4"]


@pytest.mark.parametrize("argv", [[], ["train", "resnet"]])
def test_bad_usage_exits_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "usage: explorer" in capsys.readouterr().err
