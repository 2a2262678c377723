"""Several server processes, as a class uses them: `explorer serve --workers 2`, and the shipped deploy/nginx.conf in
front of two `explorer serve` processes. Every session is served whole by one process (its page and its
websocket), both processes get sessions, each page shows its prediction and answers a gallery click, and the
logs hold no traceback. Which process served what: the cookie nginx sets, nginx's log line per request (the
process that answered and the cookie it was sent), and each process's own log lines, tagged with its address.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, expect

from explorer import workers
from explorer.core import device, images, trace, zoo
from explorer.core.gallery import GalleryItem, mnist_gallery

from .conftest import ROOT

MODEL = "mnist-cnn"  # a new session's model
WEBSOCKET = re.compile(r'"GET /app/ws[^"]*" 101 worker=(\S+) cookie=(\S+)')
NGINX_TROUBLE = re.compile(r"\[(error|crit|alert|emerg)\]")


def free_ports(n: int) -> int:
    """The first of `n` consecutive free ports on 127.0.0.1."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        probes = [socket.socket() for _ in range(n)]
        try:
            for k, s in enumerate(probes):
                s.bind(("127.0.0.1", first + k))
            return first
        except OSError:
            continue
        finally:
            for s in probes:
                s.close()


def wait_until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.2)


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def summary(item: GalleryItem) -> re.Pattern:
    """The prediction line for `item`, computed here on an independent path: preprocess, trace, softmax."""
    model = zoo.load(MODEL)
    probs = trace.run(model.module, images.to_input(item.source, model.card)).logits[0].softmax(-1)
    label = model.labels[int(probs.argmax())]
    return re.compile(rf"The model says {re.escape(label)} \({probs.max():.1%}\) for {re.escape(item.description)}\.")


@dataclass
class Student:
    """A browser of its own (its own cookies) with the app open."""

    context: BrowserContext
    page: Page
    problems: list[str]  # script errors and requests that leave this machine
    last_frame: list[float] = field(default_factory=lambda: [time.monotonic()])  # websocket traffic, either way

    def visit(self, url: str, item: GalleryItem) -> None:
        """Open the app, see a prediction, and pick `item` in the gallery."""
        self.page.goto(url)
        expect(self.page.locator(".prediction-summary")).to_contain_text("The model says", timeout=60_000)
        self.page.get_by_role("button", name=item.description).click()
        expect(self.page.locator(".prediction-summary")).to_have_text(summary(item), timeout=30_000)

    def served_by(self) -> str:
        return next(c["value"] for c in self.context.cookies() if c["name"] == workers.COOKIE)

    def leave(self, quiet_s: float = 1.0) -> None:
        """Close the browser once its websocket has been quiet for `quiet_s`: nothing is in flight."""
        while time.monotonic() - self.last_frame[0] < quiet_s:
            self.page.wait_for_timeout(100)  # Playwright delivers the frame events meanwhile
        self.context.close()


def student(browser: Browser) -> Student:
    """A new browser, watched for script errors, requests that leave this machine, and websocket traffic."""
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    page = context.new_page()
    you = Student(context, page, [])
    page.on("pageerror", lambda e: you.problems.append(f"page error: {e}"))
    page.on("request", lambda r: you.problems.append(f"external request: {r.url}")
            if not r.url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:")) else None)

    def heard(_frame) -> None:
        you.last_frame[0] = time.monotonic()

    page.on("websocket", lambda ws: (ws.on("framereceived", heard), ws.on("framesent", heard)))
    return you


def stop(process: subprocess.Popen, how: int = signal.SIGTERM) -> int | None:
    """Its exit status, or None when it had to be killed after 30 s."""
    process.send_signal(how)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return None


def test_serve_workers_2_gives_each_session_one_whole_process_and_uses_both(browser: Browser, tmp_path: Path):
    port = free_ports(3)
    processes = [f"127.0.0.1:{port + 1}", f"127.0.0.1:{port + 2}"]
    log_path = tmp_path / "serve.log"
    env = {name: value for name, value in os.environ.items() if name != "OMP_NUM_THREADS"}  # the default split
    with open(log_path, "ab") as log:  # appending: every process writes at the end
        server = subprocess.Popen([sys.executable, "-m", "explorer.cli", "serve", "--workers", "2", "--port", str(port),
                                   "--address", "127.0.0.1"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    students: list[Student] = []
    try:
        wait_until(lambda: "is served by 2 processes" in log_path.read_text() or server.poll() is not None, "start")
        assert server.poll() is None, log_path.read_text()
        for item in mnist_gallery()[5:7]:
            students.append(you := student(browser))
            you.visit(f"http://127.0.0.1:{port}/app", item)
        served = [you.served_by() for you in students]
        assert sorted(served) == processes  # new visitors take turns
        if device.device().type == "cpu":  # each process computes with its share of the cores
            expect(students[0].page.get_by_text("Computing on cpu")).to_have_text(
                f"Computing on cpu ({workers.threads_per_worker(2)} threads)")
        for you in students:
            you.leave()
        # nginx logs a websocket when it closes
        wait_until(lambda: len(WEBSOCKET.findall(log_path.read_text())) == 2, "log line of each websocket", 15)
    finally:
        code = stop(server)
        for you in students:
            you.context.close()
    log_text = log_path.read_text()
    assert code == 0, log_text
    assert [you.problems for you in students] == [[], []]
    # each session's websocket reached the process that served its page
    assert sorted(WEBSOCKET.findall(log_text)) == [(p, p) for p in processes], log_text
    opened = re.findall(r"\[(127\.0\.0\.1:\d+)\] WebSocket connection opened", log_text)
    assert sorted(opened) == processes
    assert "Traceback" not in log_text and not NGINX_TROUBLE.search(log_text), log_text
    for p in [port, port + 1, port + 2]:  # nginx and both processes are gone
        assert not listening(p)


def test_the_shipped_nginx_conf_keeps_each_session_on_its_process_and_routes_around_a_stopped_one(
        browser: Browser, tmp_path: Path):
    front = free_ports(3)
    processes = [f"127.0.0.1:{front + 1}", f"127.0.0.1:{front + 2}"]
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    here = [("listen 80;", f"listen 127.0.0.1:{front};"), ("/var/log/nginx/", f"{tmp_path}/"),
            *zip(workers.EXAMPLE_SERVERS, processes, strict=True)]
    for example, ours in here:
        assert example in site
        site = site.replace(example, ours)
    (tmp_path / "explorer.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(workers.standalone_config(tmp_path))
    logs = [tmp_path / f"explorer-{k}.log" for k in (1, 2)]
    explorers = []
    for k, log_path in enumerate(logs, start=1):
        with open(log_path, "ab") as log:
            # as on each machine: the pages come from nginx's address, so their websockets must be let in
            explorers.append(subprocess.Popen(
                [sys.executable, "-m", "explorer.cli", "serve", "--port", str(front + k), "--address", "127.0.0.1",
                 "--allow-websocket-origin", f"127.0.0.1:{front}"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "BOKEH_BROWSER": "none"}))
    with open(tmp_path / "nginx.out", "ab") as out:
        nginx = subprocess.Popen(workers.nginx_command(workers.find_nginx(), tmp_path), stdout=out,
                                 stderr=subprocess.STDOUT)
    students: list[Student] = []
    try:
        wait_until(lambda: all(listening(front + k) for k in (0, 1, 2)), "nginx and both explorers listening")
        for item in mnist_gallery()[11:13]:
            students.append(you := student(browser))
            you.visit(f"http://127.0.0.1:{front}/app", item)
        assert sorted(you.served_by() for you in students) == processes
        for you in students:
            you.leave()
        wait_until(lambda: len(WEBSOCKET.findall((tmp_path / "explorer.log").read_text())) == 2,
                   "log line of each websocket", timeout=15)
        # the first process stops: a browser sent there gets the second (and the cookie follows)
        assert stop(explorers[0]) is not None
        request = urllib.request.Request(f"http://127.0.0.1:{front}/favicon.ico",
                                         headers={"Cookie": f"{workers.COOKIE}={processes[0]}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
            assert answer.headers["Set-Cookie"].startswith(f"{workers.COOKIE}={processes[1]};")
    finally:
        for process in explorers:
            if process.poll() is None:
                stop(process)
        nginx_code = stop(nginx, signal.SIGQUIT)  # graceful: it logs every request it finishes
        for you in students:
            you.context.close()
    assert nginx_code == 0
    assert [you.problems for you in students] == [[], []]
    access = (tmp_path / "explorer.log").read_text()
    pages = re.findall(r'"GET /app HTTP/1.1" 200 worker=(\S+) cookie=-', access)
    assert sorted(pages) == processes, access  # new visitors take turns
    assert sorted(WEBSOCKET.findall(access)) == [(p, p) for p in processes], access
    for log_path in logs:
        text = log_path.read_text()
        assert "Traceback" not in text and "Refusing websocket connection" not in text, text
    # nginx's only complaints: the stopped process refused connections
    trouble = [line for line in (tmp_path / "nginx.out").read_text().splitlines() if NGINX_TROUBLE.search(line)]
    assert all("Connection refused" in line and f'upstream: "http://{processes[0]}/' in line for line in trouble), \
        trouble
