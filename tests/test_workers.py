"""explorer.workers without a browser: the thread split, the processes planned, and nginx's verdict on the configs.

tests/browser/test_workers.py serves real sessions through them.
"""

from __future__ import annotations

import subprocess

import pytest

from explorer import workers
from explorer.core.paths import ROOT
from explorer.errors import InputError


@pytest.mark.parametrize(("n", "cores", "threads"), [(1, 8, 8), (2, 8, 4), (3, 8, 2), (2, 2, 1), (4, 2, 1)])
def test_each_process_gets_its_share_of_the_cores_and_at_least_one(n, cores, threads):
    assert workers.threads_per_worker(n, cores) == threads


def test_the_plan_puts_one_panel_serve_on_each_port_after_nginxs():
    run = workers.plan(3, 7000, "127.0.0.1", ["--num-threads", "2"], environ={"PATH": "/bin"})
    assert run.ports == (7001, 7002, 7003) and run.url == "http://127.0.0.1:7000/app"
    assert run.threads == str(workers.threads_per_worker(3)) == run.env["OMP_NUM_THREADS"]
    for port, command in zip(run.ports, run.commands, strict=True):
        assert command[1:4] == ("-m", "panel", "serve") and command[4] == str(ROOT / "app.py")
        assert command[5:9] == ("--port", str(port), "--address", "127.0.0.1")
        # the pages come from nginx's port: their websockets must be let in
        assert command[9:13] == ("--allow-websocket-origin", "localhost:7000", "--allow-websocket-origin",
                                 "127.0.0.1:7000")
        assert command[13:15] == ("--log-format", f"%(asctime)s [127.0.0.1:{port}] %(message)s")
        assert command[15:] == ("--num-threads", "2")
    assert "listen 127.0.0.1:7000;" in run.site
    for port in run.ports:
        assert f"    server 127.0.0.1:{port};" in run.site and f"    127.0.0.1:{port} 127.0.0.1:{port};" in run.site


def test_the_users_thread_count_and_websocket_origins_win():
    run = workers.plan(2, 7000, None, ["--allow-websocket-origin", "class.example.org"],
                       environ={"OMP_NUM_THREADS": "3"})
    assert run.threads == run.env["OMP_NUM_THREADS"] == "3"
    assert run.commands[0].count("--allow-websocket-origin") == 1
    assert run.url == "http://localhost:7000/app" and "listen 7000;" in run.site


@pytest.mark.parametrize("flag", [["--num-procs", "2"], ["--num-procs=2"]])
def test_num_procs_is_refused_beside_workers(flag):
    with pytest.raises(InputError, match="--workers and --num-procs do not mix"):
        workers.plan(2, 7000, None, flag)


def test_the_shipped_nginx_conf_is_the_rendered_example():
    shipped = (ROOT / "deploy" / "nginx.conf").read_text()
    assert shipped == workers.site_config(workers.EXAMPLE_LISTEN, workers.EXAMPLE_SERVERS,
                                          workers.EXAMPLE_SERVER_NAME, workers.EXAMPLE_ACCESS_LOG)


def test_nginx_accepts_the_shipped_and_the_generated_configs(tmp_path):
    nginx = workers.find_nginx()  # `make test` installs it
    for site in [(ROOT / "deploy" / "nginx.conf").read_text(), workers.plan(2, 7000, None, []).site]:
        (tmp_path / "explorer.conf").write_text(site.replace("/var/log/nginx/", f"{tmp_path}/"))
        (tmp_path / "nginx.conf").write_text(workers.standalone_config(tmp_path))
        checked = subprocess.run([*workers.nginx_command(nginx, tmp_path), "-t"], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        assert "test is successful" in checked.stderr


def test_a_missing_nginx_is_named_with_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(workers, "NGINX_ELSEWHERE", [str(tmp_path)])
    with pytest.raises(InputError, match=r"nginx is not installed: install it \(Debian, Ubuntu: sudo apt-get"):
        workers.find_nginx()
