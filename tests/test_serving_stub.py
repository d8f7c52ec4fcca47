"""Tests of the TF Serving REST stand-in (acl_tf.serving.stub, ``python -m acl_tf.serving_stub``):
the TF Serving formats and errors, the request size limit, and client hang-ups. Real sockets on
127.0.0.1 only, each exchange bounded in time."""

import base64
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from serving_helpers import TIMEOUT, export_tiny_classifier, post, running_stub

from acl_tf.core.errors import ConfigError
from acl_tf.serving.stub import DEFAULT_MAX_REQUEST_BYTES, StubServer

LIMIT = 64 * 1024           # the small server's limit: one float32 image (~61 KiB of JSON) fits
PREDICT = "/v1/models/acl:predict"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    return export_tiny_classifier(root)


@pytest.fixture(scope="module")
def served(exported):
    """The exported classifier and the stub serving it with the default request limit."""
    classifier, path = exported
    with running_stub(path) as server:
        yield classifier, server


@pytest.fixture(scope="module")
def small(exported):
    """The stub serving the same model with a request limit of LIMIT bytes."""
    with running_stub(exported[1], max_request_bytes=LIMIT) as server:
        yield server


def exchange(server, data: bytes, *, then: bytes = b"", timeout: float = 10.0):
    """Sends ``data`` over a fresh connection and reads until the server closes it (at most
    ``timeout`` seconds; ``then`` is sent after the first reply bytes arrive). Returns
    (everything received, seconds until the server closed)."""
    start = time.monotonic()
    with socket.create_connection(server.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received, time.monotonic() - start
            if then and not received:
                sock.sendall(then)
            received += chunk


def parse(reply: bytes):
    """One HTTP response: (status, lower-cased headers, decoded JSON body)."""
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    assert len(body) == int(headers["content-length"]), reply[:300]
    return int(lines[0].split()[1]), headers, json.loads(body)


def request_head(length=None, *, extra: str = "", path: str = PREDICT) -> bytes:
    header = "" if length is None else f"Content-Length: {length}\r\n"
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{header}{extra}\r\n").encode()


def image_json(seed=0) -> list:
    return np.random.default_rng(seed).uniform(0, 1, size=(32, 32, 3)).astype(np.float32).tolist()


def wait_for_records(caplog, count: int = 1, seconds: float = 10.0) -> list:
    """The stub's hang-up log records, once ``count`` are there (or ``seconds`` pass)."""
    deadline = time.monotonic() + seconds
    while True:
        records = [r for r in caplog.records if "serving stub" in r.getMessage()]
        if len(records) >= count or time.monotonic() > deadline:
            time.sleep(0.2)  # a second (wrong) line would show up now
            return [r for r in caplog.records if "serving stub" in r.getMessage()]
        time.sleep(0.02)


def test_stub_answers_the_tf_serving_formats(served):
    classifier, server = served
    x = np.random.default_rng(0).uniform(0, 1, size=(3, 32, 32, 3)).astype(np.float32)
    reference = {b: classifier(x, training=False, branch=b).numpy() for b in ("adv", "normal")}

    status, reply = post(server.url + ":predict", {"instances": x.tolist()})
    assert status == 200 and len(reply["predictions"]) == 3
    assert set(reply["predictions"][0]) == {"logits", "probabilities", "class_ids"}
    logits = np.array([p["logits"] for p in reply["predictions"]])
    np.testing.assert_allclose(logits, reference["adv"], atol=1e-5)
    assert [p["class_ids"] for p in reply["predictions"]] == list(reference["adv"].argmax(1))

    status, reply = post(server.url + "/versions/1:predict",
                         {"signature_name": "serving_normal", "inputs": x.tolist()})
    assert status == 200
    np.testing.assert_allclose(reply["outputs"]["logits"], reference["normal"], atol=1e-5)

    u8 = (x * 255).astype(np.uint8)
    instances = [{"b64": base64.b64encode(tf.io.encode_png(i).numpy()).decode()} for i in u8]
    status, reply = post(server.url + ":predict", {"signature_name": "serve_image_bytes",
                                                    "instances": instances})
    assert status == 200
    expected = classifier(u8.astype(np.float32) / 255, training=False, branch="adv").numpy()
    np.testing.assert_allclose([p["logits"] for p in reply["predictions"]], expected, atol=1e-5)

    with urllib.request.urlopen(server.url, timeout=TIMEOUT) as response:
        assert json.loads(response.read())["model_version_status"][0]["state"] == "AVAILABLE"
    with urllib.request.urlopen(server.url + "/metadata", timeout=TIMEOUT) as response:
        signatures = json.loads(response.read())["metadata"]["signature_def"]
    assert set(signatures) == {"serving_default", "serve_image_bytes", "serving_normal",
                               "serving_adv"}


def test_stub_reports_errors_like_tf_serving(served):
    _, server = served
    image = np.full([32, 32, 3], 0.5).tolist()
    status, reply = post(server.url + ":predict", {"instances": [[[0.5, 0.5, 0.5]]]})
    assert status == 400 and "wrong rank" in reply["error"]
    status, reply = post(server.url + ":predict", {"instances": [np.full([32, 32, 3], 2.0)
                                                                 .tolist()]})
    assert status == 400 and "[0, 1]" in reply["error"]
    status, reply = post(server.url + ":predict", {"signature_name": "nope",
                                                    "instances": [image]})
    assert status == 400 and "nope" in reply["error"]
    status, reply = post(server.url.replace("/acl", "/other") + ":predict", {"instances": [image]})
    assert status == 404
    status, reply = post(server.url + ":predict", {"instances": [image], "inputs": [image]})
    assert status == 400 and "exactly one" in reply["error"]
    status, reply = post(server.url + ":predict", None, raw=b"{not json")
    assert status == 400 and "JSON" in reply["error"]


def test_stub_serves_a_body_at_its_limit_and_refuses_one_byte_more(served, small):
    classifier, _ = served
    assert small.max_request_bytes == LIMIT
    body = json.dumps({"instances": [image_json()]}).encode()
    assert len(body) < LIMIT < 2 * len(body)
    body = body[:-1] + b" " * (LIMIT - len(body)) + b"}"   # JSON of exactly LIMIT bytes
    status, reply = post(small.url + ":predict", None, raw=body)
    assert status == 200
    expected = classifier(np.array([image_json()], np.float32), training=False, branch="adv")
    np.testing.assert_allclose(reply["predictions"][0]["logits"], expected.numpy()[0], atol=1e-5)

    status, reply = post(small.url + ":predict", None, raw=body[:-1] + b" }")
    assert status == 413
    assert f"{LIMIT + 1} bytes" in reply["error"] and f"limit of {LIMIT} bytes" in reply["error"]
    # A client that sends its whole (4 MB) body before reading, as urllib does, still reads the
    # 413: the server drains the refused body instead of resetting the connection.
    status, reply = post(small.url + ":predict", {"instances": [image_json()] * 64})
    assert status == 413 and f"limit of {LIMIT} bytes" in reply["error"]
    # Nothing changed for the server with the default limit.
    assert served[1].max_request_bytes == DEFAULT_MAX_REQUEST_BYTES
    status, reply = post(served[1].url + ":predict", {"instances": [image_json()] * 64})
    assert status == 200 and len(reply["predictions"]) == 64


def test_stub_answers_413_without_waiting_for_the_body(small):
    # Headers claiming 100 MB, then a few bytes that look like a second request: the 413 must
    # come at once, the connection must close, and the "body" must not be answered as a request.
    reply, seconds = exchange(small, request_head(100_000_000)
                              + b"GET /v1/models/acl HTTP/1.1\r\nHost: x\r\n\r\n")
    assert seconds < 4                       # the server's lingering drain lasts 5 s
    assert reply.count(b"HTTP/1.1 ") == 1, reply
    status, headers, payload = parse(reply)
    assert status == 413 and headers["connection"] == "close"
    assert "100000000 bytes" in payload["error"] and f"limit of {LIMIT}" in payload["error"]

    # "Expect: 100-continue": refused before the client sends anything, with no 100 Continue.
    reply, seconds = exchange(small, request_head(LIMIT + 1, extra="Expect: 100-continue\r\n"))
    assert seconds < 4 and not reply.startswith(b"HTTP/1.1 100")
    assert parse(reply)[0] == 413
    # ... while a body within the limit gets its 100 Continue, then the prediction.
    body = json.dumps({"instances": [image_json()]}).encode()
    reply, _ = exchange(small, request_head(len(body), extra="Expect: 100-continue\r\n"
                                            "Connection: close\r\n"), then=body)
    assert reply.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    status, _, payload = parse(reply[len(b"HTTP/1.1 100 Continue\r\n\r\n"):])
    assert status == 200 and len(payload["predictions"]) == 1


@pytest.mark.parametrize("head, status, message", [
    (request_head(None), 411, "needs a Content-Length"),
    (request_head(None, extra="Transfer-Encoding: chunked\r\n"), 411, "chunked"),
    (request_head("12abc"), 400, "bad Content-Length"),
    (request_head(-5), 400, "bad Content-Length"),
    (request_head(10, extra="Content-Length: 11\r\n"), 400, "bad Content-Length"),
    (request_head(0), 400, "empty request body"),
], ids=["missing", "chunked", "not-a-number", "negative", "two-values", "zero"])
def test_stub_needs_a_valid_content_length(small, head, status, message):
    reply, seconds = exchange(small, head + b'{"instances": []}')
    assert seconds < 4 and reply.count(b"HTTP/1.1 ") == 1, reply
    got, headers, payload = parse(reply)
    assert got == status and headers["connection"] == "close"
    assert message in payload["error"]


def test_stub_logs_a_client_hanging_up_mid_body_in_one_line(small, caplog, capfd):
    caplog.set_level(logging.WARNING)
    with socket.create_connection(small.server_address[:2], timeout=10) as sock:
        client = "%s:%d" % sock.getsockname()[:2]
        sock.sendall(request_head(1000) + b'{"instances": [')
    records = wait_for_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert records[0].levelno == logging.WARNING and "\n" not in message
    assert f"client {client} hung up during POST {PREDICT}" in message
    assert "15 of 1000 bytes" in message
    assert records[0].exc_info is None
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err
    with urllib.request.urlopen(small.url, timeout=TIMEOUT) as response:   # still serving
        assert response.status == 200


def test_stub_logs_a_client_hanging_up_before_its_answer_in_one_line(small, caplog, capfd):
    caplog.set_level(logging.WARNING)
    body = json.dumps({"instances": [image_json()]}).encode()
    with socket.create_connection(small.server_address[:2], timeout=10) as sock:
        client = "%s:%d" % sock.getsockname()[:2]
        sock.sendall(request_head(len(body)) + body)
        # Close with a reset (SO_LINGER 0): the server's answer, or its read, then fails.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    records = wait_for_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert f"client {client} hung up" in message and "\n" not in message
    assert "reset" in message.lower() or "broken pipe" in message.lower()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err


def test_stub_server_logs_other_hang_ups_in_one_line_and_keeps_tracebacks_for_bugs(
        small, caplog, capfd):
    caplog.set_level(logging.WARNING)
    try:
        raise BrokenPipeError(32, "Broken pipe")
    except BrokenPipeError:
        small.handle_error(None, ("127.0.0.1", 4321))
    assert [r.getMessage() for r in caplog.records
            if "serving stub" in r.getMessage()] == [
        "serving stub: client 127.0.0.1:4321 hung up: [Errno 32] Broken pipe"]
    assert "Traceback" not in capfd.readouterr().err
    try:
        raise KeyError("a bug")
    except KeyError:
        small.handle_error(None, ("127.0.0.1", 4321))
    err = capfd.readouterr().err
    assert "Traceback" in err and "KeyError: 'a bug'" in err


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_stub_limit_must_be_a_positive_integer(tmp_path, limit):
    with pytest.raises(ConfigError, match="max_request_bytes"):
        StubServer(("127.0.0.1", 0), tmp_path, max_request_bytes=limit)


def test_cli_default_request_limit_is_the_stubs():
    from acl_tf.cli import serving_stub as cli   # (the command line repeats it: no TF in --help)

    assert cli.DEFAULT_MAX_REQUEST_BYTES == DEFAULT_MAX_REQUEST_BYTES


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def stub_cli(path, project_root, *args):
    """The stub command line serving ``path`` on a free port, started as from a background job
    (SIGINT ignored, which the child inherits): yields (process, its first line of output) and
    kills the process if it is still running on exit."""
    cmd = [sys.executable, "-m", "acl_tf.serving_stub", f"--model={path}", "--port=0", *args]
    proc = subprocess.Popen(cmd, cwd=project_root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_ignore_sigint,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        assert ready, "the stub did not start within 120 s"
        yield proc, proc.stdout.readline()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def assert_stops_on(proc, signum):
    """Sends ``signum``; the stub must log why it stops and exit 0 without a traceback."""
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert f"stopping ({signal.Signals(signum).name})" in err, err[-2000:]
    assert "Traceback" not in err


def test_serving_stub_cli_applies_max_request_bytes(exported, project_root):
    _, path = exported
    with stub_cli(path, project_root, "--max_request_bytes=70000") as (proc, line):
        assert "request bodies up to 70000 bytes" in line, line
        url = line.split(" at ")[1].split(":predict")[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1/models/acl")
        status, reply = post(url + ":predict", {"instances": [image_json()]})
        assert status == 200 and len(reply["predictions"]) == 1
        status, reply = post(url + ":predict", {"instances": [image_json()] * 2})
        assert status == 413 and "limit of 70000 bytes" in reply["error"]
        # Ctrl-C stops it, also when it was started with SIGINT ignored.
        assert_stops_on(proc, signal.SIGINT)

    bad = subprocess.run([sys.executable, "-m", "acl_tf.serving_stub", f"--model={path}",
                          "--max_request_bytes=0"], cwd=project_root,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "max_request_bytes" in bad.stderr


def test_serving_stub_cli_stops_on_sigterm(exported, project_root):
    """`kill`, `docker stop` and Kubernetes stop a server with SIGTERM."""
    with stub_cli(exported[1], project_root) as (proc, line):
        assert "request bodies up to" in line, line
        assert_stops_on(proc, signal.SIGTERM)


def test_serving_stub_cli_stops_on_a_signal_before_serving(monkeypatch, caplog):
    """A signal that lands between start-up and ``serve_forever`` (here: while the ready line is
    printed) stops the stub as cleanly as one that lands while it serves."""
    from acl_tf.cli import serving_stub
    from acl_tf.serving import stub

    class Starting:
        saved_model_dir, url, closed = "m/1", "http://127.0.0.1:1/v1/models/acl", False

        @property
        def max_request_bytes(self):
            os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode boundary
            time.sleep(0.5)
            return 1

        def serve_forever(self):
            raise AssertionError("the signal should have stopped the stub before serving")

        def server_close(self):
            self.closed = True

    server = Starting()
    monkeypatch.setattr(stub, "serve", lambda *args: server)
    monkeypatch.setattr(serving_stub, "FLAGS", types.SimpleNamespace(
        model="m", model_name="acl", host="127.0.0.1", port=0, max_request_bytes=1))
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with caplog.at_level(logging.INFO, logger="absl"):
            serving_stub.main([])
    except KeyboardInterrupt as escaped:  # would end the whole test session
        pytest.fail(f"the stub let {escaped!r} escape")
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert server.closed
    assert any("stopping (SIGTERM)" in r.getMessage() for r in caplog.records)
