"""A TF Serving REST stand-in for a SavedModel, where TF Serving is not installed.

    python -m acl_tf.serving_stub --saved_model=runs/ds_aff/saved_model --port=8501

See :mod:`acl_tf.serving.stub` and docs/serving.md.
"""

from __future__ import annotations

from absl import flags, logging

from acl_tf.cli.common import run
from acl_tf.serving.stub import serve

FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("saved_model", None, "SavedModel version directory or base directory.")
    flags.DEFINE_string("model_name", "acl", "Model name in the URL (/v1/models/NAME).")
    flags.DEFINE_string("host", "127.0.0.1", "Interface to listen on.")
    flags.DEFINE_integer("port", 8501, "Port (TF Serving's REST default is 8501).")
    flags.mark_flag_as_required("saved_model")


def main(argv):
    del argv
    server = serve(FLAGS.saved_model, FLAGS.model_name, FLAGS.host, FLAGS.port)
    logging.info("serving %s as %s (Ctrl-C to stop)", server.saved_model_dir, server.url)
    print(f"serving {server.saved_model_dir} at {server.url}:predict", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    run(define_flags, main)
