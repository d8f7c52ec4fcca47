"""Typed configs: named files, overrides, types, choices and ranges, JSON round trip, and that the
configs need nothing of the library (no TensorFlow)."""

import dataclasses
import json
import subprocess
import sys
import typing

import pytest
from conftest import PROJECT_ROOT

import acl_tf.configs as configs
from acl_tf.configs import (
    CONFIG_ROOT,
    BenchConfig,
    ConfigError,
    EvaluateConfig,
    FinetuneConfig,
    MethodsStudyConfig,
    PostprocessConfig,
    PretrainConfig,
    Range,
    SemisupConfig,
    StudyConfig,
    apply_overrides,
    available_configs,
    config_path,
    load_config,
    parse_override,
    read_config,
    write_config,
)
from acl_tf.configs.study import load_study_config

KINDS = {"pretrain": PretrainConfig, "finetune": FinetuneConfig, "evaluate": EvaluateConfig,
         "semisup": SemisupConfig, "bench": BenchConfig, "study": StudyConfig,
         "postprocess": PostprocessConfig}


def test_importing_the_configs_loads_no_tensorflow():
    code = ("import sys, acl_tf.configs\n"
            "print(' '.join(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('tensorflow', 'keras', 'numpy', 'acl_tf'))))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.split()
    assert "acl_tf.configs" in loaded
    assert not [m for m in loaded if m.split(".")[0] in ("tensorflow", "keras", "numpy")], loaded
    outside = [m for m in loaded if m != "acl_tf" and not m.startswith(("acl_tf.configs",
                                                                         "acl_tf.core"))]
    assert outside == [], outside


def test_presets_ship_inside_the_package_and_load_from_any_directory(tmp_path, monkeypatch):
    assert CONFIG_ROOT == PROJECT_ROOT / "acl_tf" / "configs" / "presets"
    monkeypatch.chdir(tmp_path)
    assert config_path("pretrain", "smoke") == CONFIG_ROOT / "pretrain" / "smoke.yaml"
    assert load_config(PretrainConfig, "pretrain", "smoke").data.source == "sample:cifar10"
    assert load_config(PretrainConfig, "pretrain", "cifar10_resnet18").data.source == "cifar10"


def _config_file(folder, source):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mine.yaml"
    path.write_text(f"data:\n  source: {source}\n")
    return path


def test_relative_data_paths_resolve_in_the_cwd_then_beside_the_config(tmp_path, monkeypatch):
    config = _config_file(tmp_path / "cfg", "recs/train.tfrecord")
    (tmp_path / "cfg" / "recs").mkdir()
    (tmp_path / "cfg" / "recs" / "train.tfrecord").write_bytes(b"")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    beside = load_config(PretrainConfig, "pretrain", str(config)).data.source
    assert beside == str(tmp_path / "cfg" / "recs" / "train.tfrecord")
    (tmp_path / "cwd" / "recs").mkdir()
    (tmp_path / "cwd" / "recs" / "train.tfrecord").write_bytes(b"")
    here = load_config(PretrainConfig, "pretrain", str(config)).data.source
    assert here == str(tmp_path / "cwd" / "recs" / "train.tfrecord")
    # --set values too; a directory and a glob count when they exist.
    over = load_config(PretrainConfig, "pretrain", None, ["data.source=recs"]).data.source
    assert over == str(tmp_path / "cwd" / "recs")
    glob_ = load_config(PretrainConfig, "pretrain", None, ["data.source=recs/*.tfrecord"])
    assert glob_.data.source == str(tmp_path / "cwd" / "recs" / "*.tfrecord")


def test_a_missing_relative_path_names_both_places(tmp_path, monkeypatch):
    config = _config_file(tmp_path / "cfg", "./nowhere")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(PretrainConfig, "pretrain", str(config))
    message = str(err.value)
    assert "data.source" in message
    assert repr(str(tmp_path / "nowhere")) in message
    assert repr(str(tmp_path / "cfg" / "nowhere")) in message
    with pytest.raises(ConfigError, match=r"pretrained: .runs/nope. is neither"):
        load_config(FinetuneConfig, "finetune", "smoke", ["pretrained=runs/nope"])


def test_names_urls_and_samples_pass_through(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for source in ("cifar10", "cifar10_corrupted/fog_1", "gs://bucket/cifar10", "/abs/x",
                   "sample:cifar10"):
        config = load_config(PretrainConfig, "pretrain", None, [f"data.source={source}"])
        assert config.data.source == source
    with pytest.raises(ConfigError, match=r"data.source: Unknown shipped sample 'sample:cifar9'.*"
                                          r"'sample:cifar10'"):
        load_config(PretrainConfig, "pretrain", None, ["data.source=sample:cifar9"])


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_named_config_loads(kind, tmp_path):
    names = available_configs(kind)
    assert names, kind
    for name in names:
        # A study preset is either kind of study (load_study_config tells them apart).
        config = load_study_config(name) if kind == "study" else load_config(KINDS[kind], kind,
                                                                              name)
        cls = type(config) if kind == "study" else KINDS[kind]
        assert isinstance(config, cls) and (cls is KINDS[kind] or cls is MethodsStudyConfig)
        write_config(config, tmp_path / f"{name}.json")
        assert read_config(cls, tmp_path / f"{name}.json") == config


def test_every_named_pipeline_config_resolves():
    from pipeline import config as pconfig

    names = available_configs("pipeline")
    assert {"smoke", "cifar10"} <= set(names)
    for name in names:
        stages = pconfig.load_pipeline_config(name).resolve()
        assert isinstance(stages.pretrain, PretrainConfig)
        assert isinstance(stages.evaluate, EvaluateConfig)


# -- from the old tests/test_config.py --------------------------------------------------------
def test_named_configs_load():
    assert {"cifar10_resnet18", "smoke"} <= set(available_configs("pretrain"))
    paper = load_config(PretrainConfig, "pretrain", "cifar10_resnet18")
    assert (paper.batch_size, paper.epochs, paper.temperature) == (512, 1000, 0.5)
    assert paper.attack.steps == 5 and paper.attack.epsilon == pytest.approx(8 / 255)
    assert paper.optimizer.name == "lars" and paper.optimizer.warmup_epochs == 10
    assert paper.optimizer.weight_decay == 1e-6          # written 1.0e-6 in the YAML
    smoke = load_config(PretrainConfig, "pretrain", "smoke")
    assert smoke.data.source == "sample:cifar10" and smoke.model.width == 8
    # Fields the smoke file does not name keep the dataclass defaults.
    assert smoke.attack.steps == 5 and smoke.augment.grayscale_prob == 0.2


def test_overrides_are_typed():
    config = load_config(PretrainConfig, "pretrain", "smoke",
                         ["model.width=16", "optimizer.learning_rate=0.5", "variant=A2S",
                          "augment.crop_scale=[0.1, 1.0]", "data.limit=null", "ds_average=true"])
    assert config.model.width == 16 and config.optimizer.learning_rate == 0.5
    assert config.variant == "a2s" and config.augment.crop_scale == (0.1, 1.0)
    assert config.data.limit is None and config.ds_average is True
    assert config.dual_bn


@pytest.mark.parametrize("override,message", [
    ("model.depth=3", r"Unknown config field\(s\) \['model.depth'\]; valid fields of model are"),
    ("depth=3", r"Unknown config field\(s\) \['depth'\]; valid fields of PretrainConfig are"),
    ("batch_size=big", "^batch_size must be an integer, got 'big'"),
    ("variant=simclr", r"^Unknown ACL variant 'simclr' for variant; expected one of \('s2s', "),
    ("model.bn=triple", r"Unknown BN mode 'triple' for model.bn; expected one of \('auto', "),
    ("augment.grayscale_prob=2", r"^augment.grayscale_prob must be in \[0, 1\], got 2.0"),
    ("optimizer.name=rmsprop", r"Unknown optimizer 'rmsprop' for optimizer.name; expected one "
                               r"of \('lars', 'sgd', 'adam'\)"),
    ("widthless", "must look like field.subfield=value"),
    ("=3", "has no field name"),
    ("model=3", "^model must be a mapping, got 3"),
    ("model.width.x=3", r"'width' is not a section"),
])
def test_bad_overrides_name_the_problem(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainConfig, "pretrain", "smoke", [override])


def test_unknown_config_name():
    with pytest.raises(ConfigError, match="Unknown pretrain config 'tiny'.*smoke"):
        load_config(PretrainConfig, "pretrain", "tiny")
    with pytest.raises(ConfigError, match="Config file 'no/such.yaml' does not exist"):
        load_config(PretrainConfig, "pretrain", "no/such.yaml")


def test_json_round_trip(tmp_path):
    config = load_config(PretrainConfig, "pretrain", "smoke", ["variant=a2a"])
    write_config(config, tmp_path / "config.json")
    assert read_config(PretrainConfig, tmp_path / "config.json") == config
    assert load_config(PretrainConfig, "pretrain", str(tmp_path / "config.json")) == config
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["augment"]["crop_ratio"] == [0.75, 4 / 3] and written["variant"] == "a2a"


def test_round_trip_of_every_default_config(tmp_path):
    for cls in KINDS.values():
        default = cls()
        write_config(default, tmp_path / "c.json")
        assert read_config(cls, tmp_path / "c.json") == default


# -- what a hostile user tried -----------------------------------------------------------------
@pytest.mark.parametrize("override,message", [
    ("attack.epsilon=2", r"^attack.epsilon must be in \[0, 1\], got 2.0\.$"),
    ("attack.step_size=1.5", r"^attack.step_size must be in \[0, 1\], got 1.5\.$"),
    ("attack.epsilon=-0.1", r"^attack.epsilon must be in \[0, 1\], got -0.1\.$"),
    ("temperature=0", r"^temperature must be > 0, got 0.0\.$"),
    ("model.width=0", r"^model.width must be >= 1, got 0\.$"),
    ("seed=-1", r"^seed must be in \[0, 2147483647\], got -1\.$"),
    ("optimizer.learning_rate=.nan", r"^optimizer.learning_rate must be a finite number, "
                                     r"got nan\.$"),
    ("optimizer.learning_rate=.inf", r"^optimizer.learning_rate must be a finite number, "
                                     r"got inf\.$"),
    ("optimizer.learning_rate=-.inf", r"optimizer.learning_rate must be a finite number"),
    ("optimizer.weight_decay=nan", r"optimizer.weight_decay must be a finite number, got 'nan'"),
    ("optimizer.learning_rate=0", r"^optimizer.learning_rate must be > 0, got 0.0\.$"),
    ("optimizer.momentum=1", r"^optimizer.momentum must be in \[0, 1\), got 1.0\.$"),
    ("batch_size=1", r"^batch_size must be >= 2, got 1\.$"),
    ("epochs=1e-1", r"^epochs must be an integer, got '1e-1'\.$"),
    ("data.num_classes=1", r"^data.num_classes must be >= 2, got 1\.$"),
    ("data.limit=0", r"^data.limit must be >= 1, got 0\.$"),
    ("model.head_layers=4", r"for model.head_layers; expected one of \(2, 3\)"),
    ("augment.hue=0.6", r"^augment.hue must be in \[0, 0.5\], got 0.6\.$"),
    ("augment.crop_scale=[0, 1]", r"^augment.crop_scale\[0\] must be in \(0, 1\], got 0.0\.$"),
    ("augment.crop_scale=[0.5, 0.2]", r"^augment.crop_scale must be a pair \(low, high\) with "
                                      r"low <= high, got \(0.5, 0.2\)\.$"),
])
def test_hostile_values_are_refused_with_field_value_and_range(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(PretrainConfig, "pretrain", "smoke", [override])


@pytest.mark.parametrize("override,field,expected", [
    ("optimizer.learning_rate=1e-3", "learning_rate", 0.001),
    ("optimizer.learning_rate=1e9", "learning_rate", 1e9),
    ("optimizer.learning_rate=1.0e9", "learning_rate", 1e9),
    ("optimizer.learning_rate=2E-1", "learning_rate", 0.2),
    ("optimizer.weight_decay=5e-4", "weight_decay", 5e-4),
    ("optimizer.learning_rate=3", "learning_rate", 3.0),
    ("optimizer.reference_batch_size=1e3", "reference_batch_size", 1000),
    ("optimizer.warmup_epochs=1.0e1", "warmup_epochs", 10),
])
def test_numbers_in_any_usual_notation(override, field, expected):
    config = load_config(PretrainConfig, "pretrain", "smoke", [override])
    value = getattr(config.optimizer, field)
    assert value == expected and type(value) is type(expected)


def test_int_fields_take_1e9():
    config = load_config(PretrainConfig, "pretrain", "smoke", ["epochs=1e9"])
    assert config.epochs == 1_000_000_000 and type(config.epochs) is int


def test_non_finite_values_in_json_files_are_refused(tmp_path):
    (tmp_path / "c.json").write_text('{"temperature": NaN}')
    with pytest.raises(ConfigError, match="^temperature must be a finite number, got nan"):
        read_config(PretrainConfig, tmp_path / "c.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must hold a mapping of fields"):
        read_config(PretrainConfig, tmp_path / "list.json")
    (tmp_path / "bad.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping of fields"):
        load_config(PretrainConfig, "pretrain", str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize("build,message", [
    (lambda: configs.PGDConfig(epsilon=2), r"^PGDConfig.epsilon must be in \[0, 1\], got 2.0"),
    (lambda: configs.PGDConfig(step_size=-1e-3), r"^PGDConfig.step_size must be in \[0, 1\]"),
    (lambda: configs.PGDConfig(steps=-1), r"^PGDConfig.steps must be >= 0, got -1"),
    (lambda: configs.PGDConfig(random_start="gaussian"), r"^Unknown random_start 'gaussian'"),
    (lambda: configs.ModelConfig(width=0), r"^ModelConfig.width must be >= 1, got 0"),
    (lambda: PretrainConfig(seed=-1), r"^PretrainConfig.seed must be in \[0, 2147483647\]"),
    (lambda: PretrainConfig(temperature=0.0), r"^PretrainConfig.temperature must be > 0"),
    (lambda: configs.OptimizerConfig(learning_rate=float("nan")),
     r"^OptimizerConfig.learning_rate must be a finite number, got nan"),
    (lambda: configs.OptimizerConfig(learning_rate="1e-3"),
     r"^OptimizerConfig.learning_rate must be a number, got '1e-3'"),
    (lambda: PretrainConfig(attack={"epsilon": 0.1}), r"PretrainConfig.attack must be a PGDConfig"),
    (lambda: configs.AugmentConfig(image_size=32.0),
     r"AugmentConfig.image_size must be an integer"),
    (lambda: EvaluateConfig(eps_sweep_255=(0.0, 300.0)),
     r"^EvaluateConfig.eps_sweep_255\[1\] must be in \[0, 255\], got 300.0"),
    (lambda: configs.GuardConfig(steps=(2, 0)), r"^GuardConfig.steps\[1\] must be >= 1, got 0"),
    (lambda: configs.AutoAttackConfig(square_p_init=0.0),
     r"^AutoAttackConfig.square_p_init must be in \(0, 1\], got 0.0"),
    (lambda: configs.Cifar10CConfig(severities=(6,)), r"Unknown CIFAR-10-C severity 6"),
    (lambda: SemisupConfig(label_fraction=1.0),
     r"SemisupConfig.label_fraction must be in \(0, 1\)"),
    (lambda: BenchConfig(parallel=0), r"^BenchConfig.parallel must be >= 1, got 0"),
])
def test_configs_built_in_python_are_checked_too(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_defaults_and_python_built_configs_are_normalised():
    attack = configs.PGDConfig(epsilon=0, random_start="NORMAL")
    assert attack.epsilon == 0.0 and type(attack.epsilon) is float
    assert attack.random_start == "normal"
    assert configs.AugmentConfig(crop_scale=[0.1, 1]).crop_scale == (0.1, 1.0)
    assert dataclasses.replace(attack, steps=7).steps == 7
    with pytest.raises(ConfigError, match="PGDConfig.steps must be >= 0"):
        dataclasses.replace(attack, steps=-7)
    assert FinetuneConfig(mode="ALF", bn="Normal").freeze_encoder
    assert StudyConfig(variants=("DS", "A2S"), bn_ablation=("ds",), linear=()).variants == (
        "ds", "a2s")


# -- every numeric field has a range ---------------------------------------------------------
def _config_classes():
    return sorted({obj for obj in vars(configs).values()
                   if isinstance(obj, type) and dataclasses.is_dataclass(obj)
                   and issubclass(obj, configs.ConfigBase)}, key=lambda c: c.__name__)


def _numeric_leaves(tp, where):
    """(where, annotation) of every int/float inside ``tp`` (through Optional and tuples)."""
    base, *extras = (typing.get_args(tp) if typing.get_origin(tp) is typing.Annotated
                     else (tp,))
    origin = typing.get_origin(base)
    if origin is typing.Literal:
        return []
    if origin is typing.Union or origin is tuple:
        return [leaf for i, arg in enumerate(typing.get_args(base)) if arg is not Ellipsis
                for leaf in _numeric_leaves(arg, f"{where}[{i}]")]
    if base in (int, float):
        return [(where, extras)]
    return []


def test_every_numeric_field_of_every_config_has_a_range():
    classes = _config_classes()
    assert len(classes) >= 17, [c.__name__ for c in classes]
    leaves = [leaf for cls in classes for name, tp in configs.field_types(cls).items()
              for leaf in _numeric_leaves(tp, f"{cls.__name__}.{name}")]
    assert len(leaves) > 60
    missing = [where for where, extras in leaves
               if not any(isinstance(e, Range) for e in extras)]
    assert missing == []


def test_every_config_class_builds_its_defaults():
    for cls in _config_classes():
        cls()


# -- cross-field rules stay ------------------------------------------------------------------
@pytest.mark.parametrize("cls,kind,override,message", [
    (SemisupConfig, "semisup", "labels_per_class=4", "exactly one of label_fraction"),
    (SemisupConfig, "semisup", "val_size=15", "val_size must be a positive multiple of "
                                              "data.num_classes=10, got 15"),
    (SemisupConfig, "semisup", "teacher.optimizer.decay_epochs=[20, 10]",
     r"^teacher.optimizer.decay_epochs must be strictly increasing"),
    (SemisupConfig, "semisup", "student.batch_size=1", "^student.batch_size must be >= 2, got 1"),
    (SemisupConfig, "semisup", "student.alpha_convention=torch",
     r"Unknown alpha_convention 'torch' for student.alpha_convention"),
    (FinetuneConfig, "finetune", "test_limit=55", "test_limit must be a positive multiple"),
    (FinetuneConfig, "finetune", "optimizer.decay_epochs=[2, 2]",
     r"^optimizer.decay_epochs must be strictly increasing"),
    (FinetuneConfig, "finetune", "optimizer.decay_factor=0", r"decay_factor must be in \(0, 1\]"),
    (StudyConfig, "study", "bn_ablation=[s2s]", "bn_ablation compares single and dual BN"),
    (StudyConfig, "study", "linear=[a2a]", r"linear names \['a2a'\]"),
    (StudyConfig, "study", "variants=[]", "variants must be a non-empty list"),
    (BenchConfig, "bench", "variants=[]", "variants or methods must name at least one"),
    (EvaluateConfig, "evaluate", "attacks=[clean, pgdx]", r"^attacks\[1\]: Unknown attack 'pgdx'"),
    (EvaluateConfig, "evaluate", "attacks=[]", "attacks must name at least one evaluation"),
    (EvaluateConfig, "evaluate", "autoattack.attacks=[]",
     "^autoattack.attacks must name at least one AutoAttack attack"),
    (EvaluateConfig, "evaluate", "cifar10c.corruptions=[fogg]",
     r"Unknown CIFAR-10-C corruption 'fogg' for cifar10c.corruptions\[0\]"),
])
def test_rules_name_their_fields(cls, kind, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(cls, kind, "quick" if kind == "bench" else "smoke", [override])


def test_evaluate_attack_names_are_stored_lower_case():
    config = load_config(EvaluateConfig, "evaluate", "smoke", ["attacks=[Clean, PGD7]", "bn=ADV"])
    assert config.attacks == ("clean", "pgd7") and config.bn == "adv"
    assert configs.parse_attack_name(" PGD20 ") == ("pgd", 20)


# -- overrides -------------------------------------------------------------------------------
def test_parse_and_apply_overrides():
    assert parse_override("optim.learning_rate=0.5") == (["optim", "learning_rate"], 0.5)
    assert parse_override("name=") == (["name"], "")
    assert parse_override("a=[1, 2]") == (["a"], [1, 2])
    base = {"a": {"b": 1}, "c": 2}
    out = apply_overrides(base, ["a.b=3", "a.d=x", "e.f=true"])
    assert out == {"a": {"b": 3, "d": "x"}, "c": 2, "e": {"f": True}}
    assert base == {"a": {"b": 1}, "c": 2}        # the input is not changed
    with pytest.raises(ConfigError, match="cannot parse value"):
        parse_override("a=[1, 2")


def test_overrides_keep_the_other_defaults_of_a_section():
    # PretrainConfig's attack defaults to 5 steps; overriding epsilon must keep that.
    config = load_config(PretrainConfig, "pretrain", None, ["attack.epsilon=0.1"])
    assert config.attack == configs.PGDConfig(epsilon=0.1, steps=5)
    semisup = load_config(SemisupConfig, "semisup", None, ["student.optimizer.momentum=0.5"])
    assert semisup.student.optimizer == configs.FinetuneOptimizerConfig(
        learning_rate=0.1, momentum=0.5, weight_decay=5e-4, decay_epochs=(5, 10))
