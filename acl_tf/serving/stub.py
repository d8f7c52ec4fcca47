"""A small stand-in for TensorFlow Serving's REST API, serving one SavedModel from Python.

It answers the requests that ``acl_tf.serving_check`` and most clients send, in TF Serving's
formats, so exported models can be tried where the TF Serving binary is not available (it ships
as a Docker image; see ``docs/serving.md``):

* ``GET  /v1/models/NAME`` (and ``/versions/V``): model status;
* ``GET  /v1/models/NAME/metadata``: the signatures;
* ``POST /v1/models/NAME[/versions/V]:predict`` with ``{"signature_name": ..., "instances": [...]}``
  (row format; ``{"b64": ...}`` for binary strings) or ``{"inputs": ...}`` (columnar format).
  Replies ``{"predictions": [...]}`` (one entry per instance: a dict of the signature's outputs,
  or the value itself for a single output) or ``{"outputs": ...}``; errors are
  ``{"error": "..."}`` with HTTP 400 (bad request / failed input check) or 404 (unknown model).

A request body over ``max_request_bytes`` (default :data:`DEFAULT_MAX_REQUEST_BYTES`, 16 MiB:
about 260 float32 32x32 images in row format, ~61 KiB of JSON each) is refused with HTTP 413
from its ``Content-Length`` header alone, before any of the body is read; a body without a
``Content-Length`` gets 411 and a malformed one 400. After such a refusal the connection is
closed (what the client still sends is drained for a few seconds and discarded, so that the
client can read the answer and the unread body is never taken for a next request). A client
that hangs up mid-request or before reading its answer is logged as one warning line (absl
logging) naming its address and the request, not as a traceback.

It is a development tool (single process, no batching, no model reloading), not a server for
production traffic. Run it with::

    acl-tf serving_stub --model=runs/aff/saved_model --model_name=acl --port=8501
"""

from __future__ import annotations

import base64
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf
from absl import logging

from acl_tf.core.errors import ConfigError

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "StubServer", "serve", "start_in_thread"]

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                   r"(?P<rest>/metadata|:predict)?$")
_DIGITS = re.compile(r"[0-9]+")

#: Largest request body served by default (16 MiB). A 32x32x3 float32 image is ~61 KiB of JSON
#: in row format, so this holds about 260 images (``serving_check`` sends 32 per request). A
#: request costs many times its size in memory (JSON decoding alone ~4x, then the activations).
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: How long the unread body of a refused request is drained (and discarded) before closing.
_LINGER_SECONDS = 5.0


class _RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _ClientGone(Exception):
    """The client closed its connection before sending the whole request."""


def _address(client_address) -> str:
    try:
        host, port = client_address[:2]
        return f"{host}:{port}"
    except (TypeError, ValueError):
        return str(client_address)


def _check_limit(max_request_bytes) -> int:
    if (isinstance(max_request_bytes, bool) or not isinstance(max_request_bytes, int)
            or max_request_bytes < 1):
        raise ConfigError(f"max_request_bytes must be a positive number of bytes, got "
                          f"{max_request_bytes!r}")
    return max_request_bytes


def _unbracket(assertion: str) -> str:
    """``[message] [data] [data]`` (tf.debugging.Assert's format) -> ``message [data] [data]``."""
    if assertion.startswith("["):
        end = assertion.find("] [")
        if end > 0:
            return assertion[1:end] + " " + assertion[end + 2:]
        if assertion.endswith("]"):
            return assertion[1:-1]
    return assertion


def _tf_error_message(err: tf.errors.OpError) -> str:
    """The assertion's own message(s), without TensorFlow's graph decorations."""
    text = err.message
    found = re.findall(r"assertion failed: (.*?)(?:\n|$)", text)
    if found:
        return "; ".join(dict.fromkeys(_unbracket(f.strip()) for f in found))
    return re.sub(r"\s*\[\[\{\{.*", "", text, flags=re.S).strip()


class StubServer(ThreadingHTTPServer):
    """An HTTP server answering TF Serving REST requests from one loaded SavedModel; request
    bodies over ``max_request_bytes`` are refused with HTTP 413 (see the module docstring)."""

    daemon_threads = True

    def __init__(self, address, saved_model_dir, model_name: str = "acl",
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        from acl_tf.serving.export import resolve_version_dir

        self.max_request_bytes = _check_limit(max_request_bytes)
        self.saved_model_dir = resolve_version_dir(saved_model_dir)
        self.version = (self.saved_model_dir.name if self.saved_model_dir.name.isdigit()
                        else "1")
        self.model_name = model_name
        self.model = tf.saved_model.load(str(self.saved_model_dir))
        self.signatures = dict(self.model.signatures)
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1/models/{self.model_name}"

    def handle_error(self, request, client_address):
        """socketserver prints a traceback to stderr for any error escaping a handler; a client
        hanging up is routine, so it is one log line instead (the handler logs those it sees
        with the request; this catches the rest). Other errors keep the traceback."""
        err = sys.exc_info()[1]
        if isinstance(err, ConnectionError):
            logging.warning("serving stub: client %s hung up: %s", _address(client_address), err)
        else:
            super().handle_error(request, client_address)

    # -- request handling (kept off the handler so it can be unit-tested) --

    def signature_inputs(self, name: str) -> dict:
        _, kwargs = self.signatures[name].structured_input_signature
        return kwargs

    def predict(self, body: dict) -> dict:
        if not isinstance(body, dict):
            raise _RequestError(400, "request body must be a JSON object")
        name = body.get("signature_name") or "serving_default"
        if name not in self.signatures:
            raise _RequestError(400, f"Serving signature name: \"{name}\" not found in "
                                     f"signature def (available: {sorted(self.signatures)})")
        specs = self.signature_inputs(name)
        if ("instances" in body) == ("inputs" in body):
            raise _RequestError(400, "request must hold exactly one of 'instances' (row "
                                     "format) and 'inputs' (columnar format)")
        if "instances" in body:
            feeds = self._row_inputs(body["instances"], specs)
        else:
            feeds = self._columnar_inputs(body["inputs"], specs)
        try:
            outputs = self.signatures[name](**feeds)
        except tf.errors.OpError as err:
            raise _RequestError(400, _tf_error_message(err)) from None
        except (TypeError, ValueError) as err:
            raise _RequestError(400, str(err)) from None
        outputs = {k: v.numpy() for k, v in outputs.items()}
        if "inputs" in body:
            return {"outputs": {k: _jsonable(v) for k, v in outputs.items()}}
        count = len(next(iter(outputs.values())))
        if len(outputs) == 1:
            (value,) = outputs.values()
            return {"predictions": [_jsonable(value[i]) for i in range(count)]}
        return {"predictions": [{k: _jsonable(v[i]) for k, v in outputs.items()}
                                for i in range(count)]}

    def _row_inputs(self, instances, specs: dict) -> dict:
        if not isinstance(instances, list):
            raise _RequestError(400, "'instances' must be a list")
        names = list(specs)
        if instances and isinstance(instances[0], dict) and "b64" not in instances[0]:
            columns = {n: [] for n in names}
            for i, instance in enumerate(instances):
                if not isinstance(instance, dict) or set(instance) != set(names):
                    raise _RequestError(400, f"instance {i} must be an object with keys {names}")
                for n in names:
                    columns[n].append(instance[n])
        elif len(names) == 1:
            columns = {names[0]: instances}
        else:
            raise _RequestError(400, f"signature has inputs {names}: send each instance as an "
                                     "object naming them")
        return {n: _to_tensor(columns[n], specs[n], n) for n in names}

    def _columnar_inputs(self, inputs, specs: dict) -> dict:
        names = list(specs)
        if isinstance(inputs, dict) and not (len(names) == 1 and "b64" in inputs):
            if set(inputs) != set(names):
                raise _RequestError(400, f"'inputs' must have keys {names}")
            return {n: _to_tensor(inputs[n], specs[n], n) for n in names}
        if len(names) != 1:
            raise _RequestError(400, f"signature has inputs {names}: 'inputs' must name them")
        return {names[0]: _to_tensor(inputs, specs[names[0]], names[0])}


def _decode_b64(value):
    if isinstance(value, dict):
        if set(value) != {"b64"}:
            raise _RequestError(400, "binary values must be given as {\"b64\": \"...\"}")
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError) as err:
            raise _RequestError(400, f"invalid base64 data: {err}") from None
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    if isinstance(value, str):
        return value.encode("utf-8")
    raise _RequestError(400, f"expected a string or {{\"b64\": ...}}, got {type(value).__name__}")


def _to_tensor(value, spec: tf.TensorSpec, name: str):
    if spec.dtype == tf.string:
        return tf.constant(_decode_b64(value), tf.string)
    try:
        array = np.asarray(value, dtype=spec.dtype.as_numpy_dtype)
    except (ValueError, TypeError) as err:
        raise _RequestError(400, f"input {name!r}: cannot convert to {spec.dtype.name} tensor "
                                 f"(ragged or non-numeric JSON?): {err}") from None
    return tf.constant(array)


def _jsonable(value):
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SO":
            return [_jsonable(v) for v in value]
        return value.tolist()
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value.item() if isinstance(value, np.generic) else value


def _drain(sock: socket.socket, seconds: float = _LINGER_SECONDS) -> None:
    """Lingering close: ends our side of the connection, then reads and discards what the client
    still sends until it closes (or ``seconds`` pass). Closing a socket with unread data sends a
    TCP reset, which can destroy the answer before a client that first sends its whole body
    (urllib, requests) reads it."""
    deadline = time.monotonic() + seconds
    try:
        sock.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                break
    except OSError:  # timeout, reset: the server closes the socket next either way
        pass


class _Handler(BaseHTTPRequestHandler):
    server: StubServer
    protocol_version = "HTTP/1.1"
    _linger = False            # drain the unread body before closing (see _refuse)
    _last_request = None       # the connection's previous request, for the hang-up log line

    def log_message(self, format, *args):  # noqa: A002 - quiet by default
        pass

    # -- connection handling: hang-ups are one log line, refusals close the connection --

    def handle(self):
        try:
            super().handle()
        except (ConnectionError, _ClientGone) as err:
            self.close_connection = True
            self._linger = False
            if self.path is not None:
                where = f"during {self.command} {self.path}"
            elif self._last_request:
                where = f"after {self._last_request}"
            else:
                where = "before sending a request"
            logging.warning("serving stub: client %s hung up %s: %s",
                            _address(self.client_address), where, err)

    def handle_one_request(self):
        self.command = self.path = None
        super().handle_one_request()
        if self.path is not None:
            self._last_request = f"{self.command} {self.path}"

    def handle_expect_100(self):
        # "Expect: 100-continue": refuse an oversized body before the client sends it.
        if self.command == "POST":
            try:
                self._body_length()
            except _RequestError as err:
                self._refuse(err)
                return False
        return super().handle_expect_100()

    def finish(self):
        super().finish()
        if self._linger:
            _drain(self.connection)

    def _body_length(self) -> int:
        """The request body's length from its headers, within the server's limit."""
        limit = self.server.max_request_bytes
        if "Transfer-Encoding" in self.headers:
            raise _RequestError(411, "chunked request bodies are not supported: send the body "
                                     "with a Content-Length header")
        values = [v.strip() for v in self.headers.get_all("Content-Length") or []]
        if not values:
            raise _RequestError(411, "a request body needs a Content-Length header")
        if len(set(values)) != 1 or not _DIGITS.fullmatch(values[0]):
            raise _RequestError(400, f"bad Content-Length header: {', '.join(values)!r}")
        length = int(values[0])
        if length == 0:
            raise _RequestError(400, "empty request body: send a JSON object")
        if length > limit:
            raise _RequestError(413, f"request body of {length} bytes exceeds the limit of "
                                     f"{limit} bytes (--max_request_bytes); send fewer "
                                     f"instances per request")
        return length

    def _refuse(self, err: _RequestError):
        """Answers a request whose body is not read, then closes the connection."""
        self._send(err.status, {"error": str(err)}, close=True)
        self._linger = True

    def _send(self, status: int, payload: dict, close: bool = False):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")  # also sets self.close_connection
        self.end_headers()
        self.wfile.write(data)

    def _route(self):
        match = _PATH.match(self.path.split("?")[0])
        if not match:
            raise _RequestError(404, f"Malformed request: {self.command} {self.path}")
        if match["name"] != self.server.model_name:
            raise _RequestError(404, f"Servable not found for request: Latest({match['name']})")
        if match["version"] and match["version"] != self.server.version:
            raise _RequestError(404, f"Servable not found for request: Specific("
                                     f"{match['name']}, {match['version']})")
        return match["rest"]

    # -- requests --

    def do_GET(self):  # noqa: N802 - http.server API
        # A GET body is never read: close the connection rather than parse it as a request.
        unread = ("Transfer-Encoding" in self.headers
                  or self.headers.get("Content-Length", "0").strip() not in ("", "0"))
        try:
            status, payload = 200, self._get(self._route())
        except _RequestError as err:
            status, payload = err.status, {"error": str(err)}
        self._send(status, payload, close=unread)
        self._linger = unread

    def _get(self, rest) -> dict:
        if rest == ":predict":
            raise _RequestError(400, "predict needs POST")
        if rest == "/metadata":
            sigs = {name: {"inputs": {k: {"dtype": v.dtype.name,
                                          "shape": None if v.shape.rank is None
                                          else v.shape.as_list()}
                                      for k, v in self.server.signature_inputs(name).items()},
                           "outputs": sorted(fn.structured_outputs)}
                    for name, fn in self.server.signatures.items()}
            return {"model_spec": {"name": self.server.model_name,
                                   "version": self.server.version},
                    "metadata": {"signature_def": sigs}}
        return {"model_version_status": [{
            "version": self.server.version, "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}}]}

    def do_POST(self):  # noqa: N802 - http.server API
        try:
            length = self._body_length()
        except _RequestError as err:
            self._refuse(err)  # 411 / 400 / 413 without reading the body
            return
        raw = self.rfile.read(length)
        if len(raw) < length:
            raise _ClientGone(f"request body ended after {len(raw)} of {length} bytes")
        try:
            if self._route() != ":predict":
                raise _RequestError(404, f"Malformed request: POST {self.path}")
            try:
                body = json.loads(raw)
            except ValueError as err:
                raise _RequestError(400, f"JSON Parse error: {err}") from None
            del raw
            self._send(200, self.server.predict(body))
        except _RequestError as err:
            self._send(err.status, {"error": str(err)})


def serve(saved_model_dir, model_name: str = "acl", host: str = "127.0.0.1",
          port: int = 8501, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> StubServer:
    """Loads the SavedModel (a version directory, or a base directory: its highest version) and
    returns the bound server (call ``serve_forever()``; ``port=0`` picks a free port). Request
    bodies over ``max_request_bytes`` are answered with HTTP 413."""
    return StubServer((host, port), saved_model_dir, model_name, max_request_bytes)


def start_in_thread(saved_model_dir, model_name: str = "acl", host: str = "127.0.0.1",
                    port: int = 0, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
                    ) -> tuple[StubServer, threading.Thread]:
    """Starts a server on a daemon thread; stop it with ``server.shutdown(); server.server_close()``."""
    server = serve(saved_model_dir, model_name, host, port, max_request_bytes)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True, name="acl-serving-stub")
    thread.start()
    return server, thread
