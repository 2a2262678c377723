"""The `explorer` command: info lists the models, bad arguments fail cleanly, serve wraps panel."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys

import pytest

from explorer import cli, workers
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


def exec_calls(monkeypatch) -> list[list[str]]:
    """The commands `explorer serve` would become (os.execv replaced by a recorder)."""
    calls = []

    def execv(path: str, command: list[str]) -> None:
        assert path == command[0] == sys.executable
        calls.append(command)

    monkeypatch.setattr(cli.os, "execv", execv)
    return calls


LIFETIME = ["--unused-session-lifetime", "120000"]  # a class's pages may take minutes to connect


def test_serve_wraps_panel_serve_app_py(monkeypatch):
    calls = exec_calls(monkeypatch)
    cli.main(["serve", "--port", "5100", "--num-threads", "4"])
    command = calls[0]
    assert command[1:4] == ["-m", "panel", "serve"] and command[4].endswith("app.py")
    assert command[5:] == ["--port", "5100", "--num-threads", "4", *LIFETIME]


def test_serve_passes_the_address_to_panel_serve(monkeypatch):
    calls = exec_calls(monkeypatch)
    cli.main(["serve", "--address", "0.0.0.0", "--allow-websocket-origin", "class.example.org"])
    assert calls[0][5:] == ["--port", "5006", "--address", "0.0.0.0", "--allow-websocket-origin", "class.example.org",
                            *LIFETIME]


@pytest.mark.parametrize("given", [["--unused-session-lifetime", "5000"], ["--unused-session-lifetime=5000"]])
def test_a_session_lifetime_given_wins(monkeypatch, given):
    calls = exec_calls(monkeypatch)
    cli.main(["serve", *given])
    assert calls[0][5:] == ["--port", "5006", *given]


def test_every_worker_keeps_a_session_two_minutes_for_its_websocket(monkeypatch):
    planned = []
    monkeypatch.setattr(workers, "serve", lambda n, port, address, panel_args, show: planned.append(
        workers.plan(n, port, address, panel_args)) or 0)
    assert cli.main(["serve", "--workers", "2", "--num-threads", "1"]) == 0
    for command in planned[0].commands:
        assert command[-4:] == ("--num-threads", "1", *LIFETIME)


def _no_process(*args, **kwargs):
    raise AssertionError(f"started a process: {args}")


def test_serve_refuses_workers_with_num_procs_before_starting_anything(monkeypatch, capsys):
    monkeypatch.setattr(subprocess, "Popen", _no_process)
    assert cli.main(["serve", "--workers", "2", "--num-procs", "2"]) == 2
    assert "explorer: --workers and --num-procs do not mix" in capsys.readouterr().err


def test_serve_refuses_workers_on_a_port_in_use(monkeypatch, capsys):
    monkeypatch.setattr(subprocess, "Popen", _no_process)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--workers", "2", "--port", str(port), "--address", "127.0.0.1"]) == 2
    assert f"explorer: port {port} is not free" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["train", "resnet"], ["serve", "--workers", "0"]])
def test_bad_usage_exits_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "usage: explorer" in capsys.readouterr().err
