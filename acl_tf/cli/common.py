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


def run(define_flags: Callable[[], None], main: Callable[[list], object]) -> None:
    """Defines the flags (only when run as a program, so that importing a command line defines no
    global flags) and runs ``main``; an :class:`AclTfError` ends the program with its message on
    stderr, once, and exit code 2."""
    define_flags()

    def guarded(argv):
        try:
            return main(argv)
        except AclTfError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    app.run(guarded)
