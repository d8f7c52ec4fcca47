"""Installs acl-tf as a user would and runs it outside the repository.

Builds the wheel, installs it (``--no-deps``) into a fresh virtual environment that reuses this
environment's installed dependencies (TensorFlow and the rest, through a ``.pth`` file), and from
a temporary directory far from the checkout runs the smoke pre-training through the ``acl-tf``
console script and through ``python -m acl_tf.pretrain``. Catches what an editable install
hides: files missing from the wheel (presets, the shipped sample), paths relative to the
checkout, a top-level ``pipeline`` package leaking into site-packages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TINY = ["--set=epochs=1", "--set=data.limit=64", "--set=batch_size=32", "--set=model.width=4",
        "--set=model.head_dim=16", "--set=attack.steps=1"]


def _run(cmd, cwd, env, timeout=600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python, acl-tf script, environment) of a fresh venv holding only the built wheel."""
    root = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", root / "dist", PROJECT_ROOT], cwd=root, env=env)
    wheel, = (root / "dist").glob("acl_tf-*.whl")

    target = root / "venv"
    venv.EnvBuilder(with_pip=False).create(target)
    python = target / "bin" / "python"
    site = Path(subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    # Reuse this environment's dependencies; the checkout itself must not be importable.
    (site / "_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel],
         cwd=root, env=env)
    return python, target / "bin" / "acl-tf", env, wheel


def test_wheel_holds_presets_and_sample_and_no_top_level_pipeline(installed):
    *_, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"acl_tf", wheel.name.split("-py")[0] + ".dist-info"}
    assert "acl_tf/configs/presets/pretrain/cifar10_resnet18.yaml" in names
    assert "acl_tf/data/sample/cifar10/train.tfrecord" in names


def test_installed_package_runs_smoke_pretraining_from_elsewhere(installed, tmp_path):
    python, script, env, _ = installed
    where = _run([python, "-c", "import acl_tf, sys; print(acl_tf.__file__); "
                  "import importlib.util as u; print(u.find_spec('pipeline'))"],
                 cwd=tmp_path, env=env).stdout.split()
    assert str(python.parents[1]) in where[0] and str(PROJECT_ROOT) not in where[0]
    assert where[1] == "None"                       # no top-level `pipeline` installed

    assert "pretrain" in _run([script, "--help"], cwd=tmp_path, env=env).stdout
    for name, cmd in (("script", [script, "pretrain"]),
                      ("module", [python, "-m", "acl_tf.pretrain"])):
        _run(cmd + ["--config=smoke", f"--model_dir=runs/{name}", *TINY], cwd=tmp_path, env=env)
        run = tmp_path / "runs" / name
        assert (run / "encoder.keras").is_file(), name
        config = json.loads((run / "config.json").read_text())
        assert config["data"]["source"] == "sample:cifar10"
    assert not (PROJECT_ROOT / "runs" / "script").exists()
