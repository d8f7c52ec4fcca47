"""``acl-tf <command> [flags]``: the installed command line, one entry point for every command.

    acl-tf pretrain --config=smoke --model_dir=runs/smoke_ds
    acl-tf finetune --help
    acl-tf --version

``acl-tf <command>`` runs exactly what ``python -m acl_tf.<command>`` runs.
"""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

__all__ = ["COMMANDS", "main"]

# command -> what it does (the module is acl_tf.cli.<command>)
COMMANDS = {
    "pretrain": "ACL pre-training (S2S, A2A, A2S, DS)",
    "finetune": "fine-tuning: AFF (TRADES), ALF, SLF",
    "linear_eval": "linear separability, SLF and ALF with each BN branch",
    "semisup": "semi-supervised adversarial training from few labels",
    "postprocess": "DynACL++ post-processing: k-means pseudo-labels, LP, then AFT",
    "evaluate": "clean, PGD-20, AutoAttack and corruption accuracy",
    "serving_check": "accuracy of a SavedModel as served (REST or in process)",
    "serving_stub": "a TF Serving REST stand-in for a SavedModel",
    "bench": "training-step throughput",
    "study": "the reproduction study (Tables 3-5, Fig. 3) or the comparison of ACL's "
             "successors, at a chosen scale",
    "import_checkpoint": "a PyTorch checkpoint of the reference code as acl-tf models",
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {what}" for name, what in COMMANDS.items()]
    return ("usage: acl-tf <command> [flags]    (acl-tf <command> --help lists its flags)\n\n"
            "commands:\n" + "\n".join(lines) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage(), file=sys.stdout if len(argv) >= 2 else sys.stderr)
        sys.exit(0 if len(argv) >= 2 else 2)
    if argv[1] == "--version":
        from acl_tf import __version__

        print(f"acl-tf {__version__}")
        return
    command = argv[1].replace("-", "_")
    if command not in COMMANDS:
        print(f"error: unknown command {argv[1]!r}\n\n{_usage()}", file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(f"acl_tf.cli.{command}")
    from acl_tf.cli.common import run

    sys.argv = [f"acl-tf {command}"] + argv[2:]
    run(module.define_flags, module.main)


if __name__ == "__main__":
    main()
