"""What every command line shares: the run flags, flag types (choices, fractions such as
``8/255``), deprecated flag names, ``--help``, and one exit for errors.

Exit status: 0 on success and after ``--help``; 2 for a usage error (an unknown or invalid flag,
a missing required flag, a flag and its deprecated alias together, a bad config: see
:data:`EXIT_CODES`); 1 for a failure at run time (unreadable data, a checkpoint that does not fit,
a non-finite loss, an export or a server that failed). The message is printed once, on stderr.

Nothing here imports TensorFlow: ``--help`` and usage errors answer at once.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterable, Optional

from absl import app, flags

from acl_tf.core.errors import (
    AclTfError,
    CheckpointError,
    ConfigError,
    EvaluationError,
    RunDirError,
    StrategyError,
)

__all__ = ["EXIT_CODES", "RUNTIME_ERROR", "USAGE_ERROR", "FractionListParser", "FractionParser",
           "config_help", "define_alias", "define_enum", "define_enum_list", "define_fraction",
           "define_fraction_list", "define_list", "define_run_flags", "define_strategy_flags",
           "exit_code", "help_text", "mark_required", "parse_flags", "run"]

USAGE_ERROR = 2
RUNTIME_ERROR = 1

# Exit status of the project's errors by class: the first class of an error's MRO listed here.
# Usage (2): what the command line asked for cannot be done as asked: a config or flag value, a
# run directory used as it cannot be (finished work without --resume), a strategy that does not
# fit the flags, a --model that is no classifier. Run time (1): everything else, e.g. DataError,
# CheckpointError, NonFiniteLossError, PseudoLabelError, ExportError, ServingError.
EXIT_CODES = {
    CheckpointError: RUNTIME_ERROR,      # a RunDirError, but a file that cannot be restored
    ConfigError: USAGE_ERROR,
    RunDirError: USAGE_ERROR,
    StrategyError: USAGE_ERROR,
    EvaluationError: USAGE_ERROR,
    AclTfError: RUNTIME_ERROR,
}

_HELP = {"-h": "short", "-help": "short", "--help": "short", "-?": "short",
         "-helpshort": "short", "--helpshort": "short", "-helpfull": "full", "--helpfull": "full"}


def exit_code(error: BaseException) -> int:
    """The exit status of ``error`` (:data:`EXIT_CODES`; 1 for any other exception)."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return RUNTIME_ERROR


# -- flag types ----------------------------------------------------------------------------------
class FractionParser(flags.ArgumentParser):
    """A float written as a number or a ratio (``0.031``, ``8/255``, ``8 / 255``), in
    ``[lower, upper]``: epsilons and step sizes are fractions of the [0, 1] pixel range."""

    def __init__(self, lower: Optional[float] = 0.0, upper: Optional[float] = 1.0):
        super().__init__()
        self.lower, self.upper = lower, upper

    def parse(self, argument):
        from acl_tf.configs.fields import parse_float

        if isinstance(argument, (int, float)) and not isinstance(argument, bool):
            value = float(argument)
        else:
            try:
                value = parse_float(argument)
            except ValueError:
                raise ValueError(f"{argument!r} is not a number or a ratio a/b "
                                 "(e.g. 0.031 or 8/255)") from None
        if ((self.lower is not None and value < self.lower)
                or (self.upper is not None and value > self.upper) or value != value):
            unit = (" (a fraction of the [0, 1] pixel range, e.g. 8/255)"
                    if (self.lower, self.upper) == (0, 1) else "")
            raise ValueError(f"{argument!r} must be in [{self.lower:g}, {self.upper:g}]{unit}")
        return value

    def flag_type(self):
        return "float"


class _ItemListParser(flags.ArgumentParser):
    """A comma-separated list, each item parsed by ``item`` (which raises ValueError)."""

    def __init__(self, item: Callable[[str], object]):
        super().__init__()
        self.item = item

    def parse(self, argument):
        if isinstance(argument, (list, tuple)):
            items = list(argument)
        else:
            items = [a.strip() for a in str(argument).split(",") if a.strip()]
        return [self.item(a) for a in items]

    def flag_type(self):
        return "list"


class FractionListParser(_ItemListParser):
    """A comma-separated list of fractions (``0,2/255,8/255``); an empty value is ``[]``."""

    def __init__(self, lower: Optional[float] = 0.0, upper: Optional[float] = 1.0):
        super().__init__(FractionParser(lower, upper).parse)


def _spell(value) -> str:
    """A value as a flag would be given: a multiple of 1/255 as ``k/255`` (``0`` for zero)."""
    if not isinstance(value, float):
        return str(value)
    k = value * 255
    if value and abs(k - round(k)) < 1e-9:
        return f"{round(k)}/255"
    return f"{value:g}"


class _FractionSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        return _spell(value)


class _ListSerializer(flags.ArgumentSerializer):
    def serialize(self, value):
        return ",".join(_spell(v) for v in value)


def define_fraction(name: str, default, help: str, *, lower: Optional[float] = 0.0,
                    upper: Optional[float] = 1.0, flag_values=flags.FLAGS) -> None:
    """A float flag that also takes ratios (``--epsilon=8/255``); ``default`` may be one."""
    flags.DEFINE(FractionParser(lower, upper), name, default,
                 help + " A number or a ratio, e.g. 8/255.", flag_values,
                 serializer=_FractionSerializer())


def define_fraction_list(name: str, default, help: str, flag_values=flags.FLAGS) -> None:
    """A comma-separated list of fractions (``--epsilon_sweep=0,2/255,8/255``)."""
    flags.DEFINE(FractionListParser(), name, default, help, flag_values,
                 serializer=_ListSerializer())


def define_list(name: str, default, help: str, item: Callable[[str], object],
                flag_values=flags.FLAGS) -> None:
    """A comma-separated list whose items ``item`` checks (a ValueError is a usage error)."""
    flags.DEFINE(_ItemListParser(item), name, default, help, flag_values,
                 serializer=_ListSerializer())


def _choice(choices: Iterable[str]) -> Callable[[str], str]:
    names = tuple(choices)

    def parse(text: str) -> str:
        found = [n for n in names if n.lower() == str(text).strip().lower()]
        if not found:
            raise ValueError(f"{text!r} is not one of <{'|'.join(names)}>")
        return found[0]
    return parse


def define_enum(name: str, default, choices: Iterable[str], help: str,
                flag_values=flags.FLAGS) -> None:
    """One of ``choices`` (matched case-insensitively, as configs match them); ``--help`` lists
    them and any other value is a usage error naming them."""
    flags.DEFINE_enum(name, default, list(choices), help, flag_values, case_sensitive=False)


def define_enum_list(name: str, default, choices: Iterable[str], help: str,
                     flag_values=flags.FLAGS) -> None:
    """A comma-separated list of ``choices`` (``--variants=s2s,ds``), case-insensitive."""
    names = tuple(choices)
    define_list(name, default, f"<{'|'.join(names)}>,...: {help}", _choice(names), flag_values)


# -- deprecated names and required flags ---------------------------------------------------------
class _DeprecatedAlias(flags.Flag):
    """``--old``: still accepted for one release in place of ``--new`` (its value converted by
    ``convert``); giving it prints one warning line, giving both is a usage error."""

    def __init__(self, name: str, new: str, parser, serializer, convert, spell, note: str):
        super().__init__(parser, serializer, name, None,
                         f"Deprecated: use --{new}{note}.")
        self.new, self.convert, self.spell, self.note = new, convert, spell, note


def define_alias(old: str, new: str, *, parser: Optional[flags.ArgumentParser] = None,
                 convert: Optional[Callable] = None, spell: Optional[Callable] = None,
                 note: str = "", flag_values=flags.FLAGS) -> None:
    """Defines ``--old`` as a deprecated alias of the (already defined) flag ``--new``.

    Without ``parser`` the alias parses values as ``--new`` does. ``convert`` maps the alias's
    value to ``--new``'s (e.g. 1/255 units to fractions), ``spell`` writes that value as it
    would be given to ``--new`` (for the warning). ``--help`` lists the alias apart.
    """
    target = flag_values[new]
    if target.boolean or isinstance(target, flags.MultiFlag):
        raise TypeError(f"--{new}: aliases of boolean and repeated flags are not supported")
    flags.DEFINE_flag(_DeprecatedAlias(
        old, new, parser or target.parser,
        flags.ArgumentSerializer() if parser else target.serializer, convert, spell, note),
        flag_values)


def mark_required(*names: str, flag_values=flags.FLAGS) -> None:
    """The flags that must be given (checked after deprecated aliases have been applied, so that
    ``--old`` satisfies a required ``--new``)."""
    for name in names:
        flag_values[name].acl_required = True


def _aliases(flag_values) -> list:
    seen = {}
    for name in flag_values:
        flag = flag_values[name]
        if isinstance(flag, _DeprecatedAlias):
            seen[flag.name] = flag
    return sorted(seen.values(), key=lambda f: f.name)


class _UsageError(Exception):
    pass


def _apply_aliases(flag_values) -> None:
    for alias in _aliases(flag_values):
        if not alias.present:
            continue
        target = flag_values[alias.new]
        if target.present:
            raise _UsageError(f"--{alias.new} and its deprecated alias --{alias.name} were both "
                              f"given; give --{alias.new} only.")
        value = alias.value if alias.convert is None else alias.convert(alias.value)
        spelled = f": --{alias.new}={alias.spell(alias.value)}" if alias.spell else ""
        print(f"warning: --{alias.name} is deprecated; use --{alias.new}{spelled}",
              file=sys.stderr)
        target.value = value
        target.present = alias.present
        target.using_default_value = False
    try:
        flag_values.validate_all_flags()
    except flags.Error as err:
        raise _UsageError(str(err)) from None


# -- --help --------------------------------------------------------------------------------------
def _program(argv0: str) -> str:
    """``acl-tf pretrain``, or ``python -m acl_tf.pretrain`` for the module shims."""
    path = Path(argv0)
    if path.suffix == ".py" and path.parent.name == "acl_tf":
        return f"python -m acl_tf.{path.stem}"
    return argv0


def help_text(doc: Optional[str], full: bool = False, flag_values=flags.FLAGS,
              module: Optional[str] = None) -> str:
    """The command's docstring, its flags (every flag with ``full``) and its deprecated
    aliases."""
    module = module or sys.argv[0]
    parts = [(doc or f"{_program(module)} [flags]").strip("\n"), ""]
    if full:
        parts.append(flag_values.get_help())
    else:
        # module_help() is "\n<module>:\n  --flag: ..."; the module line is dropped.
        rendered = flag_values.module_help(module).split("\n")[2:]
        parts += ["flags:", "\n".join(rendered).rstrip("\n")]
    aliases = _aliases(flag_values)
    if aliases:
        parts += ["", "deprecated flags (still accepted in this release; each prints a warning):"]
        parts += [f"  --{a.name}: use --{a.new}{a.note}" for a in aliases]
    if not full:
        parts += ["", f"Try {_program(module)} --helpfull for every flag (absl's too)."]
    return "\n".join(parts) + "\n"


def _help_asked(args) -> Optional[str]:
    for arg in args:
        if arg == "--":
            return None
        if arg in _HELP:
            return _HELP[arg]
    return None


# -- parsing and running -------------------------------------------------------------------------
def usage_error(message: str, program: str) -> None:
    """Prints ``error: message`` (once) and a pointer to ``--help``; exits with status 2."""
    print(f"error: {message}\nSee `{program} --help` for the flags.", file=sys.stderr)
    sys.exit(USAGE_ERROR)


def parse_flags(argv, flag_values=flags.FLAGS, doc: Optional[str] = None) -> list:
    """absl's flag parsing with this project's conventions: ``--help`` (``-h``, ``--helpfull``)
    prints the command's help and exits 0; an unknown or invalid flag, a missing required flag,
    a deprecated alias given with its new name, or a positional argument exits 2; deprecated
    aliases are applied (one warning line each). Returns the remaining ``argv``."""
    argv = list(argv)
    program = _program(argv[0])
    asked = _help_asked(argv[1:])
    if asked:
        sys.stdout.write(help_text(doc, asked == "full", flag_values, argv[0]))
        sys.stdout.flush()
        sys.exit(0)
    try:
        rest = flag_values(argv)
        _apply_aliases(flag_values)
    except (flags.Error, _UsageError) as err:
        usage_error(str(err), program)
    missing = sorted({flag_values[name].name for name in flag_values
                      if getattr(flag_values[name], "acl_required", False)
                      and flag_values[name].value is None})
    if missing:
        usage_error(" and ".join(f"--{m}" for m in missing)
                    + (" is" if len(missing) == 1 else " are") + " required.", program)
    if len(rest) > 1:
        usage_error(f"unexpected argument(s) {rest[1:]}: flags are written --name=value.",
                    program)
    return rest


def config_help(kind: str) -> str:
    """``--config``'s help: the presets of ``kind`` (listed without importing TensorFlow)."""
    from acl_tf.configs import available_configs

    names = ", ".join(available_configs(kind)) or "none"
    return (f"Config: a preset name ({names}; see acl_tf/configs/presets/{kind}/) or a path to "
            "a YAML/JSON file.")


def define_run_flags(kind: str, default_config: str, outputs: str) -> None:
    """``--config``, ``--set``, ``--model_dir`` (required) and ``--resume`` of a training command;
    ``kind`` is the folder of its presets, ``acl_tf/configs/presets/<kind>/``, ``outputs`` what
    the run directory receives."""
    flags.DEFINE_string("config", default_config, config_help(kind))
    flags.DEFINE_multi_string("set", [], "Config override field.sub=value (repeatable); "
                              "fractions may be written as ratios, e.g. attack.epsilon=8/255")
    flags.DEFINE_string("model_dir", None, f"The run directory this command writes ({outputs}). "
                        "Required.")
    flags.DEFINE_bool("resume", False, "Continue from the last checkpoint in --model_dir.")
    mark_required("model_dir")


def define_strategy_flags() -> None:
    """``--strategy``, ``--tpu`` and ``--sync_bn``, the flags every training command shares."""
    from acl_tf.configs import STRATEGIES

    define_enum("strategy", "default", STRATEGIES,
                "tf.distribute strategy: one device, the GPUs of this machine, several "
                "machines (TF_CONFIG) or a TPU.")
    flags.DEFINE_string("tpu", None, "TPU name or grpc:// address for --strategy=tpu ('local' on a "
                        "TPU VM; empty: auto-detect).")
    flags.DEFINE_bool("sync_bn", None, "Synchronise BN batch statistics across replicas "
                      "(overrides model.sync_bn; default: the config's).")


@contextlib.contextmanager
def _stderr_closed():
    """File descriptor 2 pointed at the null device for the block (C++ writes included)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Loads ``tensorflow``, when something first imports it, with stderr closed: TF 2.20+ prints
    its load-time notes (oneDNN, CUDA drivers) before it reads ``TF_CPP_MIN_LOG_LEVEL``. An
    import error is still raised, and printed once stderr is back."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            exec_module = spec.loader.exec_module

            def quiet_exec_module(module):
                with _stderr_closed():
                    exec_module(module)

            spec.loader.exec_module = quiet_exec_module
        return spec


def quiet_tensorflow_import() -> None:
    """Makes the first ``import tensorflow`` silent when ``TF_CPP_MIN_LOG_LEVEL`` asks for quiet
    (the command lines' default); a no-op once TensorFlow is loaded."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0"):
        return
    if not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


def run(define_flags: Callable[[], None], main: Callable[[list], object]) -> None:
    """Defines the flags (only when run as a program, so that importing a command line defines no
    global flags), parses them (:func:`parse_flags`) and runs ``main``; an :class:`AclTfError`
    ends the program with its message on stderr, once, and the exit status of its class
    (:func:`exit_code`). Other exceptions are bugs: their traceback is printed, status 1."""
    # TensorFlow's C++ log (CUDA plugin registration on CPU machines, oneDNN notes) and a Python
    # version notice of a Google dependency are noise for a command line; TF_CPP_MIN_LOG_LEVEL=0
    # shows TensorFlow's log again. (acl_tf.cli sets the default before anything imports TF.)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    quiet_tensorflow_import()
    warnings.filterwarnings("ignore", message=".*non-supported Python version",
                            category=FutureWarning)
    before = set(flags.FLAGS)
    define_flags()
    # --help lists the key flags of the program's "module" (sys.argv[0]): make the command's own
    # flags (defined in acl_tf.cli.<command>, not in the ``python -m`` shim) key flags of it.
    for name in sorted(set(flags.FLAGS) - before):
        if not isinstance(flags.FLAGS[name], _DeprecatedAlias):
            flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])

    command = sys.modules.get(main.__module__)
    doc = command.__doc__ if command is not None else None
    if doc and "__main__" in sys.modules:
        sys.modules["__main__"].__doc__ = doc

    def guarded(argv):
        try:
            return main(argv)
        except AclTfError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(exit_code(err))

    app.run(guarded, flags_parser=lambda argv: parse_flags(argv, doc=doc))
