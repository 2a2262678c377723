"""`explorer serve --workers N`: N server processes behind nginx, each student's session kept on one process.

Why not `panel serve --num-procs N`: Bokeh builds a session's document when the browser GETs the page, and
the page's websocket joins that session by its id afterwards. The forked processes share one listening
socket, and the kernel hands each connection to any of them, so the websocket often reaches a process that
never saw the GET. That process builds the document again from the session token (Bokeh's
`create_session_if_needed`); the first one is discarded unused some 20 s later. Measured with this app
(Bokeh 3.9.2, Panel 1.9.4, two processes, six browser sessions, two runs): two and three sessions of six were
built twice, and exactly those pages asked the CDN for Panel's stylesheets (`cdn.holoviz.org`): a document
built by the websocket did not get the resource mode that the GET sets. Stopping the first process also left
the forked ones running. So each process gets a port of its own, and nginx routes: a new visitor to the next
process in turn, and every later request of that browser (its websockets above all) to the process named in
a cookie that nginx set on the page.

Threads: each process gets this machine's cores divided between the processes (`threads_per_worker`) as
OMP_NUM_THREADS, which torch reads when it loads. N processes that each run one OpenMP thread per core would,
when students click at the same moment, run N times more threads than cores, and each op would wait for its
slowest, descheduled thread.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import webbrowser
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from explorer.errors import InputError

COOKIE = "explorer_worker"  # holds the address of the process that has the browser's sessions
NGINX_ELSEWHERE = ["/usr/sbin", "/usr/local/sbin", "/opt/homebrew/bin"]  # often not on a user's PATH
START_TIMEOUT_S = 120
EVERY_INTERFACE = (None, "", "0.0.0.0", "::")  # --address values that mean "listen everywhere"

# The example that deploy/nginx.conf was written from (a test keeps the two equal).
EXAMPLE_LISTEN = "80"
EXAMPLE_SERVER_NAME = "explorer.example.org"
EXAMPLE_SERVERS = ("10.0.0.11:5006", "10.0.0.12:5006")
EXAMPLE_ACCESS_LOG = "/var/log/nginx/explorer.log explorer"

SITE = """\
# nginx in front of several explorer processes (on one machine or several), with sticky sessions.
# Written by explorer.workers.site_config(); `explorer serve --workers N` runs the same on one machine.
#
# A student's Bokeh session lives in the process that served the page, and the page's websocket must reach
# that process. A new visitor goes to the next process in turn; every answer sets a cookie naming the process
# that gave it, and every later request of that browser (the websocket too) goes to the process the cookie
# names. If that process is down, another one answers (and the page there starts a new session).
#
# List each process twice, as IP:port: in `upstream explorer` and in the map below it (a host name in the map
# would need a `resolver` directive: nginx looks up a proxy_pass address taken from a variable when a request
# comes). Each process must accept websockets from pages of the address students open (Bokeh's
# --allow-websocket-origin), e.g.
#   explorer serve --port 5006 --address 0.0.0.0 --allow-websocket-origin explorer.example.org

log_format explorer '$time_local $remote_addr "$request" $status worker=$upstream_addr cookie=$cookie_{cookie}';

upstream explorer {{
    zone explorer 64k;  # whose turn it is, shared by nginx's worker processes
{upstream}
}}

# The process the cookie names; no cookie, or one naming no process here: the next in turn.
map $cookie_{cookie} $explorer_worker {{
    default explorer;
{routes}
}}

# The process that answered: the last address where nginx tried more than one.
map $upstream_addr $explorer_served_by {{
    "~(?<address>[^ ,]+)$" $address;
}}

map $http_upgrade $explorer_connection {{
    default upgrade;
    "" close;
}}

server {{
    listen {listen};
    server_name {server_name};
    access_log {access_log};

    proxy_http_version 1.1;
    proxy_set_header Upgrade $http_upgrade;  # the websocket
    proxy_set_header Connection $explorer_connection;
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_read_timeout 1h;  # a student may read for long; Bokeh pings every 37 s anyway
    proxy_send_timeout 1h;
    add_header Set-Cookie "{cookie}=$explorer_served_by; Path=/; HttpOnly; SameSite=Lax" always;

    location / {{
        proxy_pass http://$explorer_worker;
        error_page 502 504 = @another_worker;  # the cookie's process is down: a new session elsewhere
    }}

    location @another_worker {{
        proxy_pass http://explorer;
    }}
}}
"""

STANDALONE = """\
# Written by `explorer serve --workers N` for this run only: nginx as this user, files in {prefix}.
daemon off;
worker_processes 1;  # proxying is light next to the explorer's own work; leave the cores to it
pid {prefix}/nginx.pid;
error_log stderr warn;

events {{
    worker_connections 4096;
}}

http {{
    proxy_max_temp_file_size 0;  # big answers wait for the browser instead of going to disk
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/explorer.conf;
}}
"""


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """torch threads for each of `workers` processes: this machine's cores shared out, at least one each."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


def site_config(listen: str, servers: Sequence[str], server_name: str = "_",
                access_log: str = "/var/log/nginx/explorer.log explorer") -> str:
    """nginx configuration (http context, e.g. /etc/nginx/conf.d/explorer.conf) that serves `listen` from the
    explorer processes at `servers` ("host:port"), each browser kept on one process."""
    if not servers:
        raise InputError("nginx needs at least one explorer process to send students to; none was given")
    return SITE.format(listen=listen, server_name=server_name, access_log=access_log, cookie=COOKIE,
                       upstream="\n".join(f"    server {server};" for server in servers),
                       routes="\n".join(f"    {server} {server};" for server in servers))


def standalone_config(prefix: Path) -> str:
    """A whole nginx.conf that runs in the foreground as any user, with every file it writes under `prefix`
    and the site from `prefix`/explorer.conf."""
    return STANDALONE.format(prefix=prefix)


def find_nginx() -> str:
    """The nginx program (Debian installs it in /usr/sbin, which a user's PATH often lacks)."""
    nginx = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), *NGINX_ELSEWHERE]))
    if nginx is None:
        raise InputError("explorer serve --workers puts nginx in front of the processes (sticky sessions), and "
                         "nginx is not installed: install it (Debian, Ubuntu: sudo apt-get install nginx; macOS: "
                         "brew install nginx), or serve with one process (leave out --workers)")
    return nginx


@dataclass(frozen=True)
class Plan:
    """What `explorer serve --workers N` starts: one `panel serve` per worker port, nginx in front."""

    url: str                        # what students open
    port: int                       # nginx's
    ports: tuple[int, ...]          # the explorer processes', on 127.0.0.1
    threads: str                    # each process's OMP_NUM_THREADS: its torch threads
    commands: tuple[tuple[str, ...], ...]
    env: dict[str, str]             # the explorer processes' environment
    site: str                       # nginx's explorer.conf

    @property
    def servers(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]


def plan(workers: int, port: int, address: str | None, panel_args: Sequence[str],
         environ: dict[str, str] | None = None) -> Plan:
    """The processes and the nginx site that serve the app on `address`:`port` with `workers` processes on the
    ports after it. panel_args go to every process."""
    from explorer.core.paths import ROOT

    if any(arg == "--num-procs" or arg.startswith("--num-procs=") for arg in panel_args):
        raise InputError("--workers and --num-procs do not mix: --workers starts the processes itself, each on "
                         "its own port behind nginx (--num-procs shares one port, and a page's websocket may "
                         "reach a process that does not have its session)")
    ports = tuple(port + 1 + k for k in range(workers))
    host = "localhost" if address in EVERY_INTERFACE else address
    # Bokeh accepts a websocket only from pages of an allowed origin, and the pages now come from nginx's port:
    # localhost (what panel serve allows unless told) and the address given; --allow-websocket-origin replaces both.
    origins: list[str] = []
    if not any(arg.startswith("--allow-websocket-origin") for arg in panel_args):
        for origin in dict.fromkeys(["localhost", host]):
            origins += ["--allow-websocket-origin", f"{origin}:{port}"]
    env = {**(os.environ if environ is None else environ), "BOKEH_BROWSER": "none"}
    # read by torch when it loads; a value of the user's wins
    threads = env.setdefault("OMP_NUM_THREADS", str(threads_per_worker(workers)))
    commands = tuple((sys.executable, "-m", "panel", "serve", str(ROOT / "app.py"), "--port", str(worker_port),
                      "--address", "127.0.0.1", *origins,
                      "--log-format", f"%(asctime)s [127.0.0.1:{worker_port}] %(message)s", *panel_args)
                     for worker_port in ports)
    listen = str(port) if address in (None, "") else f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    # one line per student session, when it ends: which process served it
    site = site_config(listen, [f"127.0.0.1:{p}" for p in ports], access_log="/dev/stderr explorer if=$http_upgrade")
    return Plan(f"http://{host}:{port}/app", port, ports, threads, commands, env, site)


def serve(workers: int, port: int, address: str | None, panel_args: Sequence[str], show: bool) -> int:
    """Run `workers` copies of `panel serve app.py` on the ports after `port` and nginx on `port`, until
    interrupted or until one of them stops (then stop the rest). Returns the exit status."""
    run = plan(workers, port, address, panel_args)
    local = "127.0.0.1" if address in EVERY_INTERFACE else address  # where this machine reaches nginx
    _check_free(local, [port, *run.ports])
    nginx = find_nginx()
    with tempfile.TemporaryDirectory(prefix="explorer-nginx-") as folder:
        prefix = Path(folder)
        prefix.chmod(0o755)  # nginx started by root runs its workers as nobody; they need to enter this folder
        (prefix / "explorer.conf").write_text(run.site)
        (prefix / "nginx.conf").write_text(standalone_config(prefix))
        processes: dict[str, subprocess.Popen] = {}
        relay = None
        stop = _StopSignal()
        try:
            for server, command in zip(run.servers, run.commands, strict=True):
                processes[f"explorer process {server}"] = subprocess.Popen(command, env=run.env)
            # nginx's log goes through a pipe: opened by path, /dev/stderr would be a second file description on
            # our stderr, and where that is a file, the other processes' writes would overwrite nginx's lines
            processes["nginx"] = subprocess.Popen(nginx_command(nginx, prefix), stdout=subprocess.PIPE,
                                                  stderr=subprocess.STDOUT, text=True)
            relay = threading.Thread(target=_relay, args=(processes["nginx"].stdout,), daemon=True)
            relay.start()
            addresses = [("127.0.0.1", p) for p in run.ports] + [(local, port)]
            if (failed := _wait_until_listening(processes, addresses)) is not None:
                return failed
            print(f"explorer: {run.url} is served by {workers} processes ({run.threads} torch threads each, ports "
                  f"{run.ports[0]}-{run.ports[-1]}) behind nginx", file=sys.stderr, flush=True)
            if show:
                webbrowser.open(run.url)
            while True:
                for name, process in processes.items():
                    if (code := process.poll()) is not None:
                        print(f"explorer: {name} stopped (exit status {code}); stopping the others",
                              file=sys.stderr, flush=True)
                        return code or 1
                time.sleep(0.5)
        except (KeyboardInterrupt, _Stopped):
            return 0
        finally:
            stop.restore()
            _stop(processes)
            if relay is not None:
                relay.join()


class _Stopped(Exception):
    """SIGTERM arrived: stop the processes like Ctrl-C does."""


class _StopSignal:
    """While serving, SIGTERM raises _Stopped in the main thread, so that the processes are stopped too."""

    def __init__(self) -> None:
        self._previous = signal.signal(signal.SIGTERM, self._raise)

    @staticmethod
    def _raise(signum, frame) -> None:
        raise _Stopped

    def restore(self) -> None:
        signal.signal(signal.SIGTERM, self._previous)


def _check_free(host: str, ports: Sequence[int]) -> None:
    """Refuse ports that something already listens on (it would answer in place of a process started here)."""
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError as error:
                raise InputError(f"port {port} is not free ({error.strerror}): --workers {len(ports) - 1} needs "
                                 f"ports {ports[0]}-{ports[-1]}; choose another --port") from None


def nginx_command(nginx: str, prefix: Path) -> list[str]:
    """Run nginx with `prefix`/nginx.conf (standalone_config) and its log on stderr: with `-e stderr` (nginx
    1.19.5 and later) it does not first open the system's error log, which a user may not write."""
    version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", version)
    early_log = ["-e", "stderr"] if found and tuple(map(int, found.groups())) >= (1, 19, 5) else []
    return [nginx, *early_log, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]


def _wait_until_listening(processes: dict[str, subprocess.Popen], addresses: list[tuple[str, int]]) -> int | None:
    """Wait until every process accepts connections at its address. Returns None, or the exit status to return
    when one stopped or did not start in time."""
    deadline = time.monotonic() + START_TIMEOUT_S
    waiting = dict(zip(processes, addresses, strict=True))
    while waiting:
        for name, (host, port) in list(waiting.items()):
            if (code := processes[name].poll()) is not None:
                print(f"explorer: {name} stopped while starting (exit status {code})", file=sys.stderr, flush=True)
                return code or 1
            try:
                socket.create_connection((host, port), timeout=1).close()
                del waiting[name]
            except OSError:
                pass
        if waiting and time.monotonic() > deadline:
            print(f"explorer: {', '.join(waiting)} did not start within {START_TIMEOUT_S} s",
                  file=sys.stderr, flush=True)
            return 1
        time.sleep(0.2)
    return None


def _relay(lines) -> None:
    for line in lines:
        sys.stderr.write(f"nginx: {line}")
        sys.stderr.flush()


def _stop(processes: dict[str, subprocess.Popen]) -> None:
    """Stop the explorer processes, then nginx: gracefully, so that it logs the sessions they ended."""
    nginx = processes.get("nginx")
    explorers = [process for name, process in processes.items() if name != "nginx"]
    for process in explorers:
        if process.poll() is None:
            process.terminate()
    for process in explorers:
        _wait_or_kill(process)
    if nginx is not None:
        if nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)  # graceful; its connections to the explorers are closed by now
        _wait_or_kill(nginx)


def _wait_or_kill(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
