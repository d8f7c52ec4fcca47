"""Shared by the serving tests: a tiny exported classifier and the REST stand-in serving it on
127.0.0.1 (an ephemeral port)."""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request

from eval_helpers import make_tiny_classifier

from acl_tf.serving.export import export_classifier
from acl_tf.serving.stub import start_in_thread

TIMEOUT = 60


def export_tiny_classifier(root):
    """A tiny dual-BN classifier exported under ``root/saved_model``: (classifier, version dir)."""
    classifier = make_tiny_classifier(seed=2)
    return classifier, export_classifier(classifier, root / "saved_model")


@contextlib.contextmanager
def running_stub(saved_model, **kwargs):
    """The stub serving ``saved_model`` on a thread, stopped (and its thread joined) on exit."""
    server, thread = start_in_thread(saved_model, model_name="acl", **kwargs)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert not thread.is_alive()


def post(url, body, raw: bytes | None = None):
    """POSTs ``body`` as JSON (or the bytes ``raw``): (HTTP status, decoded JSON reply)."""
    data = json.dumps(body).encode() if raw is None else raw
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
