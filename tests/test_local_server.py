"""tools/local_server.py: the one wait-for-a-host-server loop (ComfyUI and the WebUIs), against a real HTTP server
in a thread and a stand-in child process (no host needed)."""

from __future__ import annotations

import http.server
import threading

import pytest
from local_server import ServerError, answers, free_port, wait_until_ready


class Proc:
    """A stand-in ``Popen``: running until ``exit_after`` polls (None: forever)."""

    def __init__(self, exit_after=None, code=3):
        self.polls, self.exit_after, self.code, self.returncode = 0, exit_after, code, None

    def poll(self):
        self.polls += 1
        if self.exit_after is not None and self.polls > self.exit_after:
            self.returncode = self.code
        return self.returncode


class Clock:
    """Fake time: ``sleep`` advances it, so a timeout is reached without waiting."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def server():
    """A loopback HTTP server answering 200 on /ready once ``state["up"]`` is set, 404 before and elsewhere."""
    state = {"up": False, "hits": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            state["hits"] += 1
            ok = self.path == "/ready" and state["up"]
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    httpd.shutdown()
    httpd.server_close()


def test_waits_until_the_route_answers_200(server):
    url, state = server
    clock = Clock()

    def sleep(seconds):  # the server comes up after three polls
        clock.sleep(seconds)
        state["up"] = clock.now >= 1.5

    waited = wait_until_ready(Proc(), url + "/ready", timeout=60, name="host", clock=clock, sleep=sleep)
    assert waited == 1.5 and state["hits"] == 4  # 404, 404, 404, then 200


def test_a_server_that_exits_is_reported_at_once_with_its_log(server, tmp_path):
    url, _ = server
    log = tmp_path / "server.log"
    log.write_text("start\nTraceback: the host broke\n")
    proc, clock = Proc(exit_after=2, code=7), Clock()
    with pytest.raises(ServerError, match=r"(?s)host exited early \(exit code 7\).*the host broke"):
        wait_until_ready(proc, url + "/ready", timeout=60, name="host", log_path=log, clock=clock,
                         sleep=clock.sleep)
    assert clock.now == 1.0  # two polls of 0.5 s, not the whole timeout


def test_a_silent_server_times_out(server):
    url, state = server
    clock = Clock()
    with pytest.raises(ServerError, match="did not answer .*/ready within 5 s"):
        wait_until_ready(Proc(), url + "/ready", timeout=5, name="host", clock=clock, sleep=clock.sleep)
    assert 5 < clock.now <= 5.5 and state["hits"] == 12


def test_nothing_listening_is_not_an_answer():
    assert not answers(f"http://127.0.0.1:{free_port()}/", timeout=1)
