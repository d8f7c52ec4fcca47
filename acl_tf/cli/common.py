"""What every command line shares: the run flags, and one exit for the project's errors."""

from __future__ import annotations

import sys
from typing import Callable

from absl import app, flags

from acl_tf.core.errors import AclTfError


def define_run_flags(kind: str, default_config: str, outputs: str) -> None:
    """``--config``, ``--set``, ``--model_dir`` (required) and ``--resume`` of a training command;
    ``kind`` is the folder of named configs under ``configs/``, ``outputs`` what the run
    directory receives."""
    flags.DEFINE_string("config", default_config, f"Config name under configs/{kind}/ or a path "
                        "to a YAML/JSON file.")
    flags.DEFINE_multi_string("set", [], "Config override field.sub=value (repeatable).")
    flags.DEFINE_string("model_dir", None, f"Run directory ({outputs}).")
    flags.DEFINE_bool("resume", False, "Continue from the last checkpoint in --model_dir.")
    flags.mark_flag_as_required("model_dir")


def define_strategy_flags() -> None:
    """``--strategy``, ``--tpu`` and ``--sync_bn``, the flags every training command shares."""
    from acl_tf.configs import STRATEGIES

    flags.DEFINE_enum("strategy", "default", list(STRATEGIES),
                      "tf.distribute strategy: one device, the GPUs of this machine, several "
                      "machines (TF_CONFIG) or a TPU.")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu ('local' on a "
                        "TPU VM; empty: auto-detect).")
    flags.DEFINE_bool("sync_bn", None, "Synchronise BN batch statistics across replicas "
                      "(overrides model.sync_bn; default: the config's).")


def run(define_flags: Callable[[], None], main: Callable[[list], object]) -> None:
    """Defines the flags (only when run as a program, so that importing a command line defines no
    global flags) and runs ``main``; an :class:`AclTfError` ends the program with its message on
    stderr, once, and exit code 2."""
    before = set(flags.FLAGS)
    define_flags()
    # ``--help`` lists the key flags of the program's main module: make the command's own flags
    # (defined in acl_tf.cli.<command>, not in the ``python -m`` shim) key flags of it.
    for name in sorted(set(flags.FLAGS) - before):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])

    # ... and its usage text is the command's docstring.
    command = sys.modules.get(main.__module__)
    if command is not None and command.__doc__ and "__main__" in sys.modules:
        sys.modules["__main__"].__doc__ = command.__doc__

    def guarded(argv):
        try:
            return main(argv)
        except AclTfError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)
