"""The command lines' shared frame: every flag in ``--help``, one error exit for AclTfError."""

import subprocess
import sys
import textwrap

import pytest
from conftest import PROJECT_ROOT

# A flag of each command's own (not a shared one), which --help must list.
COMMANDS = {
    "pretrain": ["--variant", "--strategy", "--model_dir", "--resume"],
    "finetune": ["--pretrained", "--mode", "--bn", "--sync_bn"],
    "semisup": ["--label_fraction", "--step", "--tpu"],
    "linear_eval": ["--pretrained", "--set"],
    "evaluate": ["--attacks", "--eps_sweep"],
    "study": ["--study_dir", "--report_only"],
    "bench": ["--quick", "--variants"],
    "serving_stub": ["--saved_model", "--max_request_bytes"],
    "serving_check": ["--url", "--epsilon_255"],
}


def _run(args, **kwargs):
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300, **kwargs)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_the_commands_flags(command):
    proc = _run(["-m", f"acl_tf.{command}", "--help"])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]   # (absl exits 1 after --help)
    for flag in COMMANDS[command]:
        assert flag in proc.stdout, f"{flag} missing from `python -m acl_tf.{command} --help`"
    assert "runs the command line" not in proc.stdout, "usage text must be the command's own"


def test_project_errors_exit_2_with_the_message_once():
    script = textwrap.dedent("""
        from absl import flags
        from acl_tf.cli.common import run
        from acl_tf.core.errors import ConfigError

        def define_flags():
            flags.DEFINE_string("thing", None, "A thing.")

        def main(argv):
            raise ConfigError("thing must be round, got square")

        run(define_flags, main)
    """)
    proc = _run(["-c", script, "--thing=square"])
    assert proc.returncode == 2
    assert proc.stderr.count("thing must be round, got square") == 1
    assert "Traceback" not in proc.stderr


def test_other_errors_are_not_swallowed():
    script = textwrap.dedent("""
        from acl_tf.cli.common import run

        def main(argv):
            raise KeyError("a bug")

        run(lambda: None, main)
    """)
    proc = _run(["-c", script])
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError" in proc.stderr
