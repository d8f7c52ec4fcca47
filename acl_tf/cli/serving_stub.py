"""A TF Serving REST stand-in for a SavedModel (``--model``), where TF Serving is not installed.

    acl-tf serving_stub --model=runs/ds_aff/saved_model --port=8501

(``python -m acl_tf.serving_stub`` runs the same; ``--saved_model`` is the deprecated name of
``--model``.) See :mod:`acl_tf.serving.stub` and docs/serving.md.
"""

from __future__ import annotations

import signal

from absl import flags, logging

from acl_tf.cli.common import define_alias, mark_required, run

FLAGS = flags.FLAGS

# acl_tf.serving.stub.DEFAULT_MAX_REQUEST_BYTES, repeated so that --help needs no TensorFlow
# (a test checks that the two agree).
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024


def define_flags():
    flags.DEFINE_string("model", None, "The SavedModel this command serves: a version directory "
                        "or a base directory (its highest version). Required.")
    define_alias("saved_model", "model")
    flags.DEFINE_string("model_name", "acl", "Model name in the URL (/v1/models/NAME).")
    flags.DEFINE_string("host", "127.0.0.1", "Interface to listen on.")
    flags.DEFINE_integer("port", 8501, "Port (TF Serving's REST default is 8501; 0 picks a free "
                         "one).", lower_bound=0)
    flags.DEFINE_integer("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES,
                         "Largest request body served; a larger Content-Length is answered with "
                         "HTTP 413 before the body is read (default 16 MiB: about 260 float32 "
                         "32x32 images in row format).", lower_bound=1)
    mark_required("model")


def _stop(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv):
    del argv
    from acl_tf.serving.stub import serve

    # Ctrl-C (SIGINT) and SIGTERM (`kill`, `docker stop`, Kubernetes) both stop the server
    # cleanly. Set explicitly: a process started from a background job inherits SIGINT ignored,
    # and Python then installs no handler for it, so `kill -INT` would do nothing.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)

    server = None
    try:  # from here on: a signal that arrives while starting up also stops cleanly
        server = serve(FLAGS.model, FLAGS.model_name, FLAGS.host, FLAGS.port,
                       FLAGS.max_request_bytes)
        logging.info("serving %s as %s (Ctrl-C to stop)", server.saved_model_dir, server.url)
        print(f"serving {server.saved_model_dir} at {server.url}:predict (request bodies up to "
              f"{server.max_request_bytes} bytes)", flush=True)
        server.serve_forever()
    except KeyboardInterrupt as stop:  # raised by _stop, which names the signal
        logging.info("serving stub: stopping (%s)", stop)
    finally:
        if server is not None:
            server.server_close()


if __name__ == "__main__":
    run(define_flags, main)
