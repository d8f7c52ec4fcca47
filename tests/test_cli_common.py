"""The command lines' shared frame (acl_tf.cli.common): every flag in ``--help`` (exit 0, quiet,
no TensorFlow), choices and fractions checked as flags are parsed, deprecated flag names that
still work and warn, and exit status 2 for usage errors, 1 for failures at run time.

Most subprocesses here import no TensorFlow (a fraction of a second each); the real run and
the oneDNN switch do."""

import json
import os
import platform
import re
import subprocess
import sys
import textwrap

import pytest
from absl import flags
from conftest import PROJECT_ROOT

from acl_tf.cli import common
from acl_tf.core import errors

STRATEGY = ["--strategy", "--tpu", "--sync_bn"]
RUN = ["--config", "--set", "--model_dir", "--resume"]
# Every flag each command takes (--help must list them all) and its deprecated names.
COMMANDS = {
    "pretrain": (RUN + STRATEGY + ["--variant", "--method"], []),
    "postprocess": (RUN + ["--model"], []),
    "finetune": (RUN + STRATEGY + ["--model", "--mode", "--bn"], ["--pretrained"]),
    "semisup": (RUN + STRATEGY + ["--model", "--label_fraction", "--labels_per_class", "--step",
                                  "--teacher", "--pseudo_labels"], ["--pretrained"]),
    "linear_eval": (RUN + ["--model"], ["--pretrained"]),
    "evaluate": (["--model", "--output", "--data", "--split", "--limit", "--subset", "--bn",
                  "--attacks", "--epsilon", "--step_size", "--epsilon_sweep", "--config", "--set",
                  "--cifar10c_data_dir", "--cifar10c_download", "--data_dir", "--batch_size",
                  "--restarts", "--seed"], ["--eps_sweep"]),
    "study": (["--config", "--model_dir", "--report_dir", "--report_only", "--set"],
              ["--study_dir"]),
    "bench": (["--config", "--quick", "--variants", "--methods", "--batch_size", "--width", "--precision",
               "--jit_compile", "--steps", "--warmup_steps", "--floor", "--pipeline",
               "--pipeline_source", "--pipeline_limit", "--intra_op_threads",
               "--inter_op_threads", "--parallel", "--set", "--output", "--markdown",
               "--from_json"], []),
    "serving_stub": (["--model", "--model_name", "--host", "--port", "--max_request_bytes"],
                     ["--saved_model"]),
    "serving_check": (["--model", "--url", "--data", "--split", "--limit", "--subset",
                       "--signature_name", "--pgd_steps", "--epsilon", "--step_size",
                       "--batch_size", "--seed", "--timeout", "--output"],
                      ["--saved_model", "--epsilon_255", "--step_size_255"]),
    "import_checkpoint": (["--checkpoint", "--model_dir", "--format", "--state_dict_key",
                           "--key_prefix", "--bn", "--export"], []),
}

# Runs a command line's flag parsing (no TensorFlow): main prints the parsed flags as JSON.
PARSE_ONLY = textwrap.dedent("""
    import importlib, json, sys
    from absl import flags
    from acl_tf.cli import common

    command = sys.argv[1]
    module = importlib.import_module("acl_tf.cli." + command)
    sys.argv = ["acl-tf " + command] + sys.argv[2:]

    def main(argv):
        print(json.dumps({name: flags.FLAGS[name].value for name in flags.FLAGS}, default=str))

    common.run(module.define_flags, main)
""")


def _run(args, env=None, **kwargs):
    return subprocess.run([sys.executable, *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300, env=env, **kwargs)


def _parse(command, *args):
    """(returncode, parsed flags or None, stderr) of ``acl-tf command args`` up to main."""
    proc = _run(["-c", PARSE_ONLY, command, *args])
    return proc.returncode, json.loads(proc.stdout) if proc.returncode == 0 else None, proc.stderr


def _listed(help_text):
    """The flags a --help lists (``--name:`` and ``--[no]name:`` lines)."""
    names = set()
    for line in help_text.splitlines():
        if line.startswith("  --"):          # (wrapped help lines are indented further)
            names.add("--" + line[4:].split(":", 1)[0].replace("[no]", ""))
    return names


def test_every_command_is_checked_here():
    from acl_tf.cli.main import COMMANDS as ACL_TF_COMMANDS

    assert set(COMMANDS) == set(ACL_TF_COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_lists_every_flag_exits_0_quietly(command):
    proc = _run(["-m", f"acl_tf.{command}", "--help"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr == ""
    own, deprecated = COMMANDS[command]
    listed = _listed(proc.stdout.split("deprecated flags")[0])
    assert listed == set(own), (f"`python -m acl_tf.{command} --help` lists {sorted(listed)}")
    for old in deprecated:
        assert f"  {old}: use --" in proc.stdout
    import importlib

    doc = importlib.import_module(f"acl_tf.cli.{command}").__doc__
    assert proc.stdout.startswith(doc.strip().splitlines()[0])    # the command's own docstring
    assert not re.search(r"configs/(?!presets/)\w+/", proc.stdout)   # presets moved


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_acl_tf_help_is_the_same_and_imports_no_tensorflow(command):
    script = textwrap.dedent(f"""
        import sys
        from acl_tf.cli.main import main
        try:
            main(["acl-tf", "{command}", "--help"])
        finally:
            print("tensorflow imported:", "tensorflow" in sys.modules)
    """)
    proc = _run(["-c", script])
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.rstrip().endswith("tensorflow imported: False")
    assert _listed(proc.stdout.split("deprecated flags")[0]) == set(COMMANDS[command][0])
    assert f"Try acl-tf {command} --helpfull" in proc.stdout


@pytest.mark.parametrize("command,args,expected,warned", [
    ("finetune", ["--pretrained=runs/ds", "--model_dir=out"], {"model": "runs/ds"},
     ["--pretrained is deprecated; use --model"]),
    ("linear_eval", ["--pretrained=runs/ds", "--model_dir=out"], {"model": "runs/ds"},
     ["--pretrained is deprecated; use --model"]),
    ("semisup", ["--pretrained=runs/ds", "--model_dir=out"], {"model": "runs/ds"},
     ["--pretrained is deprecated; use --model"]),
    ("serving_stub", ["--saved_model=sm"], {"model": "sm"},
     ["--saved_model is deprecated; use --model"]),
    ("serving_check", ["--saved_model=sm", "--url=u", "--data=d", "--epsilon_255=4",
                       "--step_size_255=1"],
     {"model": "sm", "epsilon": 4 / 255, "step_size": 1 / 255},
     ["--saved_model is deprecated; use --model",
      "--epsilon_255 is deprecated; use --epsilon: --epsilon=4/255",
      "--step_size_255 is deprecated; use --step_size: --step_size=1/255"]),
    ("evaluate", ["--model=m", "--output=r.json", "--eps_sweep=0,8,64"],
     {"epsilon_sweep": [0, 8 / 255, 64 / 255]},
     ["--eps_sweep is deprecated; use --epsilon_sweep: --epsilon_sweep=0,8/255,64/255"]),
    ("study", ["--study_dir=runs/study"], {"model_dir": "runs/study"},
     ["--study_dir is deprecated; use --model_dir"]),
])
def test_each_deprecated_flag_works_and_warns_once(command, args, expected, warned):
    code, parsed, stderr = _parse(command, *args)
    assert code == 0, stderr
    for name, value in expected.items():
        assert parsed[name] == pytest.approx(value), name
    assert sorted(stderr.splitlines()) == sorted(f"warning: {w}" for w in warned)


def test_new_names_fractions_and_case_insensitive_choices():
    code, parsed, stderr = _parse("serving_check", "--model=sm", "--url=u", "--data=d",
                                  "--epsilon=8 / 255", "--step_size=0.0078", "--subset=FIRST")
    assert code == 0 and stderr == ""
    assert parsed["epsilon"] == 8 / 255 and parsed["step_size"] == 0.0078
    assert parsed["subset"] == "first" and parsed["limit"] == 100
    code, parsed, _ = _parse("evaluate", "--model=m", "--output=r.json", "--epsilon=8/255",
                             "--epsilon_sweep=0,2/255,8/255", "--attacks=Clean,PGD20")
    assert parsed["epsilon"] == 8 / 255 and parsed["epsilon_sweep"] == [0, 2 / 255, 8 / 255]
    assert parsed["attacks"] == ["clean", "pgd20"]
    code, parsed, _ = _parse("evaluate", "--model=m", "--output=r.json", "--epsilon_sweep=")
    assert code == 0 and parsed["epsilon_sweep"] == []
    code, parsed, _ = _parse("pretrain", "--variant=DS", "--strategy=Mirrored", "--model_dir=o")
    assert (parsed["variant"], parsed["strategy"]) == ("ds", "mirrored")


@pytest.mark.parametrize("command,args,message", [
    ("finetune", ["--pretrained=a", "--model=b", "--model_dir=o"],
     "--model and its deprecated alias --pretrained were both given"),
    ("finetune", ["--mode=full", "--model_dir=o"], "value should be one of <aff|alf|slf>"),
    ("pretrain", ["--variant=simclr", "--model_dir=o"], "value should be one of <s2s|a2a|a2s|ds>"),
    ("pretrain", ["--strategy=horovod", "--model_dir=o"],
     "value should be one of <default|mirrored|multi_worker|tpu>"),
    ("semisup", ["--step=labels", "--model_dir=o"],
     "value should be one of <all|teacher|pseudo_label|student>"),
    ("evaluate", ["--model=m", "--output=r.json", "--bn=both"], "one of <normal|adv>"),
    ("evaluate", ["--model=m", "--output=r.json", "--subset=random"], "<balanced|first>"),
    ("evaluate", ["--model=m", "--output=r.json", "--attacks=clean,fgsm"], "Unknown attack 'fgsm'"),
    ("evaluate", ["--model=m", "--output=r.json", "--epsilon=8"], "must be in [0, 1]"),
    ("evaluate", ["--model=m", "--output=r.json", "--epsilon=8/0"], "not a number or a ratio"),
    ("evaluate", ["--output=r.json"], "--model is required"),
    ("bench", ["--variants=s2s,simclr"], "'simclr' is not one of <s2s|a2a|a2s|ds>"),
    ("bench", ["--precision=float64"], "<float32|mixed_bfloat16|mixed_float16>"),
    ("linear_eval", ["--model_dir=o"], "--model is required"),
    ("study", [], "--model_dir is required"),
    ("pretrain", ["--model_dir=o", "smoke"], "unexpected argument(s) ['smoke']"),
    ("pretrain", ["--model_dir=o", "--no_such_flag=1"], "Unknown command line flag 'no_such_flag'"),
])
def test_usage_errors_exit_2_with_one_message(command, args, message):
    code, _, stderr = _parse(command, *args)
    assert code == 2, stderr
    assert stderr.count(message) == 1 and stderr.startswith("error: ")
    assert "Traceback" not in stderr and "FATAL" not in stderr


def _raising(error: str) -> str:
    return textwrap.dedent(f"""
        from absl import flags
        from acl_tf.cli.common import run
        from acl_tf.core.errors import *

        def define_flags():
            flags.DEFINE_string("thing", None, "A thing.")

        def main(argv):
            raise {error}

        run(define_flags, main)
    """)


@pytest.mark.parametrize("error,code", [
    ("ConfigError('thing must be round, got square')", 2),
    ("DataError('thing must be round, got square')", 1),
])
def test_project_errors_exit_by_class_with_the_message_once(error, code):
    proc = _run(["-c", _raising(error), "--thing=square"])
    assert proc.returncode == code
    assert proc.stderr == "error: thing must be round, got square\n"


def test_exit_codes_by_error_class():
    usage = [errors.ConfigError, errors.RunDirError, errors.StrategyError,
             errors.EvaluationError]
    runtime = [errors.DataError, errors.CheckpointError, errors.NonFiniteLossError,
               errors.PseudoLabelError, errors.ExportError, errors.ServingError,
               errors.BenchmarkError, errors.AclTfError, KeyError]
    assert [common.exit_code(cls("x")) for cls in usage] == [2] * len(usage)
    assert [common.exit_code(cls("x")) for cls in runtime] == [1] * len(runtime)


def test_other_errors_are_not_swallowed():
    script = textwrap.dedent("""
        from acl_tf.cli.common import run

        def main(argv):
            raise KeyError("a bug")

        run(lambda: None, main)
    """)
    proc = _run(["-c", script])
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "KeyError" in proc.stderr


def test_parse_flags_in_process(capsys):
    fv = flags.FlagValues()
    flags.DEFINE_string("model", None, "The model.", flag_values=fv)
    common.define_fraction("epsilon", "8/255", "Epsilon.", flag_values=fv)
    common.define_alias("pretrained", "model", flag_values=fv)
    common.define_alias("epsilon_255", "epsilon", parser=flags.FloatParser(),
                        convert=lambda v: v / 255, spell=lambda v: f"{v:g}/255", flag_values=fv)
    common.mark_required("model", flag_values=fv)
    assert fv["epsilon"].value == 8 / 255               # a ratio as the default

    assert common.parse_flags(["prog", "--pretrained=runs/ds", "--epsilon_255=4"], fv) == ["prog"]
    assert (fv.model, fv.epsilon) == ("runs/ds", 4 / 255)
    assert fv["model"].present and fv["epsilon"].present
    assert capsys.readouterr().err.splitlines() == [
        "warning: --epsilon_255 is deprecated; use --epsilon: --epsilon=4/255",
        "warning: --pretrained is deprecated; use --model"]

    with pytest.raises(SystemExit) as exit_:
        common.parse_flags(["prog", "-h"], fv, doc="Does things.\n")
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("Does things.")
    assert "--pretrained: use --model" in out


def test_a_real_run_prints_no_tensorflow_noise(tmp_path):
    """TF_CPP_MIN_LOG_LEVEL defaults to 3 in the command lines (no CUDA registration errors on a
    CPU machine); a failure at run time (a ServingError, after TensorFlow is loaded) exits 1."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = _run(["-m", "acl_tf.serving_check", "--url=http://127.0.0.1:9/v1/models/acl",
                 f"--data={tmp_path / 'none'}", f"--model={tmp_path}"], env=env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: cannot reach http://127.0.0.1:9/v1/models/acl")
    assert len(proc.stderr.splitlines()) == 1


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="oneDNN's switch is set on x86-64 only")
def test_command_lines_turn_onednn_on_unless_told_otherwise():
    """On x86-64 the command lines ask for oneDNN where TensorFlow would leave it off (CPUs
    without AVX-512 VNNI/BF16 or AMX); a value the user set wins."""
    code = ("import acl_tf.cli, os; import tensorflow as tf; "
            "from tensorflow.python.util import _pywrap_util_port as port; "
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), port.IsMklEnabled())")
    unset = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    for env, expected in ((unset, "1 True"), ({**unset, "TF_ENABLE_ONEDNN_OPTS": "0"}, "0 False")):
        proc = _run(["-c", code], env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert proc.stdout.split() == expected.split(), proc.stdout
