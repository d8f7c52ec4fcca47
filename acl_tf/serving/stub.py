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

It is a development tool (single process, no batching, no model reloading), not a server for
production traffic. Run it with::

    python -m acl_tf.serving_stub --saved_model=runs/aff/saved_model --model_name=acl --port=8501
"""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import tensorflow as tf

__all__ = ["StubServer", "serve", "start_in_thread"]

_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?"
                   r"(?P<rest>/metadata|:predict)?$")
_MAX_BODY = 256 * 1024 * 1024


class _RequestError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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
    """An HTTP server answering TF Serving REST requests from one loaded SavedModel."""

    daemon_threads = True

    def __init__(self, address, saved_model_dir, model_name: str = "acl"):
        from acl_tf.serving.export import resolve_version_dir

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


class _Handler(BaseHTTPRequestHandler):
    server: StubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - quiet by default
        pass

    def _send(self, status: int, payload: dict):
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
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

    def do_GET(self):  # noqa: N802 - http.server API
        try:
            rest = self._route()
            if rest == ":predict":
                raise _RequestError(400, "predict needs POST")
            if rest == "/metadata":
                sigs = {name: {"inputs": {k: {"dtype": v.dtype.name,
                                              "shape": None if v.shape.rank is None
                                              else v.shape.as_list()}
                                          for k, v in self.server.signature_inputs(name).items()},
                               "outputs": sorted(fn.structured_outputs)}
                        for name, fn in self.server.signatures.items()}
                self._send(200, {"model_spec": {"name": self.server.model_name,
                                                "version": self.server.version},
                                 "metadata": {"signature_def": sigs}})
                return
            self._send(200, {"model_version_status": [{
                "version": self.server.version, "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""}}]})
        except _RequestError as err:
            self._send(err.status, {"error": str(err)})

    def do_POST(self):  # noqa: N802 - http.server API
        try:
            if self._route() != ":predict":
                raise _RequestError(404, f"Malformed request: POST {self.path}")
            length = int(self.headers.get("Content-Length") or 0)
            if length <= 0 or length > _MAX_BODY:
                raise _RequestError(400, f"request body of {length} bytes (needs 1 .. "
                                         f"{_MAX_BODY})")
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError as err:
                raise _RequestError(400, f"JSON Parse error: {err}") from None
            self._send(200, self.server.predict(body))
        except _RequestError as err:
            self._send(err.status, {"error": str(err)})


def serve(saved_model_dir, model_name: str = "acl", host: str = "127.0.0.1",
          port: int = 8501) -> StubServer:
    """Loads the SavedModel (a version directory, or a base directory: its highest version) and
    returns the bound server (call ``serve_forever()``; ``port=0`` picks a free port)."""
    return StubServer((host, port), saved_model_dir, model_name)


def start_in_thread(saved_model_dir, model_name: str = "acl", host: str = "127.0.0.1",
                    port: int = 0) -> tuple[StubServer, threading.Thread]:
    """Starts a server on a daemon thread; stop it with ``server.shutdown(); server.server_close()``."""
    server = serve(saved_model_dir, model_name, host, port)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True, name="acl-serving-stub")
    thread.start()
    return server, thread
