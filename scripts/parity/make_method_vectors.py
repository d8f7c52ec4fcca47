"""Writes the parity vectors of ACL's successors, DynACL and AIR, into ``tests/parity/``.

The method of ``make_vectors.py`` (whose helpers this script uses): the reference code is
imported from snapshot directories given on the command line, unmodified, and the functions and
statements that live in its training scripts are read out of those files and executed as
written; weights and inputs come from seeded NumPy generators (``tests/parity_helpers.py``), the
reference's random attack starts are fed stored uniform draws, and everything runs on the CPU.

* DynACL, https://github.com/PKU-ML/DYNACL: ``train_DynACL.py`` (``train``,
  ``PGD_contrastive``, the argument parser, and from ``main`` the optimizer and scheduler
  statements and the epoch loop), ``models/resnet_multi_bn.py`` (``resnet18_momentum``,
  ``proj_head``), ``utils.py`` (``cosine_annealing``, ``nt_xent``), ``optimizer/lars.py``.
* AIR, https://github.com/GodXuxilie/Enhancing_ACL_via_AIR: ``AIR.py`` (``AIR_Loss``),
  ``pretraining.py`` (``train``, ``PGD_contrastive``, ``nt_xent``, ``cosine_annealing``, the
  parser, and from ``main`` the optimizer and scheduler statements and the epoch loop),
  ``models/resnet_multi_bn.py``, ``optimizer/lars.py``, ``finetuning_utils.py``
  (``AverageMeter`` only: the module itself imports torchvision, autoattack and robustbench).
  AIR's ``models/resnet_multi_bn.py`` imports ``NormalizeByChannelMeanStd`` from a top-level
  ``utils`` module that the repository does not have; the class is defined in its
  ``models/utils.py``, which this script provides under that name.

Vectors (docs/parity.md, "DynACL and AIR"):

``air_loss``          ``AIR_Loss`` (its total and its four terms, and the total's gradient) on
                      stored projections, several stream weights and lambdas, float32 and
                      float64.
``dynacl_schedules``  whole runs of the scripts' own epoch loops (a stand-in linear model in place
                      of the ResNet, which the schedules do not depend on): per epoch DynACL's
                      augmentation strength and ``weight_adv`` and the learning rate of every
                      update (its LambdaLR stepped once per epoch), the same after a resume; per
                      epoch AIR's strength and stream weight, and its per-update learning rate.
``dynacl_step``       one iteration of ``train_DynACL.train`` with the momentum model
                      (``swap=True``) at an epoch whose ``weight_adv`` is not 1: loss, x', the
                      gradient and LARS update of ``encoder_q``, the EMA change of ``encoder_k``,
                      both encoders' BN statistics (``*_f64``: in float64).
``air_step``          one iteration of ``pretraining.train`` with ``--ACL_DS --DynAug`` at an
                      epoch whose weight is not 0: loss and its four terms, x', gradients, LARS
                      update, BN statistics (the ``normal`` branch also after its first pass).

Environment: that of ``make_vectors.py`` (``scripts/parity/requirements.txt``)::

    "$PARITY_VENV"/bin/python scripts/parity/make_method_vectors.py \\
        --dynacl_repo=SNAPSHOT_OF_DYNACL --air_repo=SNAPSHOT_OF_AIR
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import importlib
import importlib.util
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_vectors as mv  # noqa: E402  (its helpers; imports torch and parity_helpers)

ph = mv.ph
REPO = mv.REPO
PAIRS = mv.PAIRS
SEEDS = {"dynacl_model": 11, "air_model": 12, "images": 100, "original": 120,
         "dynacl_start": 111, "air_start": 112, "air_features": 210}
# The step vectors' epoch (of the scripts' default 1000): DynACL's weight_adv is
# 1 + 10 * 0.05 * 2/3 = 4/3 there, AIR's weight 2/3 * (1 - 0.55) = 0.3.
STEP_EPOCH = 500
# Every top-level module name the two snapshots (and ACL's) define.
_SNAPSHOT_MODULES = ("utils", "models", "optimizer", "AIR")


# -- importing two snapshots that define modules of the same names -------------------------------
@contextlib.contextmanager
def _snapshot_on_path(repo: Path):
    """Imports inside see ``repo``'s own ``utils``, ``models``, ... (any already imported from
    another snapshot are set aside, and put back afterwards)."""
    def ours(name):
        return name.split(".")[0] in _SNAPSHOT_MODULES

    saved = {k: sys.modules.pop(k) for k in list(sys.modules) if ours(k)}
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        sys.path.remove(str(repo))
        for key in [k for k in sys.modules if ours(k)]:
            del sys.modules[key]
        sys.modules.update(saved)


def _module_from(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _main_body(path: Path) -> list:
    """The statements of the script's ``main``."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return node.body
    raise SystemExit(f"{path} has no main()")


def _if_on(statements, test: str) -> ast.If:
    """The ``if`` statement (with its ``elif`` chain) whose condition begins with ``test``."""
    for node in statements:
        if isinstance(node, ast.If) and ast.unparse(node.test).startswith(test):
            return node
    raise SystemExit(f"no `if {test}...` in main()")


def _epoch_loop(statements) -> ast.For:
    for node in statements:
        if isinstance(node, ast.For) and getattr(node.target, "id", None) == "epoch":
            return node
    raise SystemExit("no `for epoch in ...` loop in main()")


def _run(nodes, namespace: dict, path: Path) -> None:
    """Executes statements read from ``path`` in ``namespace``."""
    exec(compile(ast.Module(body=list(nodes), type_ignores=[]), str(path), "exec"), namespace)


@contextlib.contextmanager
def locals_at_return(function, names):
    """Records, each time ``function`` returns, its local variables ``names`` (the reference
    computes its stream weights inside ``train`` and keeps them there)."""
    code = function.__code__
    seen = []

    def profile(frame, event, arg):
        if event == "return" and frame.f_code is code:
            seen.append({n: frame.f_locals.get(n) for n in names})

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


def _value(x) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


class _StandIn(torch.nn.Module):
    """A linear map in place of the ResNet-18 for the schedule runs (strength, stream weights and
    learning rates do not depend on the model); ``encoder_k`` and the EMA call as
    ``resnet18_momentum`` has them."""

    def __init__(self, features: int):
        super().__init__()
        self.encoder_q = torch.nn.Linear(features, 4)
        self.encoder_k = torch.nn.Linear(features, 4)

    def _momentum_update_encoder_k(self):
        pass

    def forward(self, x, bn_name=None, swap=False):
        return self.encoder_q(x.flatten(1))


class _Stop(Exception):
    pass


def _recording_step(optimizer, rates: list) -> None:
    """``optimizer.step()`` also records the learning rate of the update it makes."""
    step = optimizer.step

    def recording(*args, **kwargs):
        rates.append(optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    optimizer.step = recording


# -- the references ------------------------------------------------------------------------------
class DynACL:
    """PKU-ML/DYNACL: ``train_DynACL.py`` and what it imports."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.script = repo / "train_DynACL.py"
        with _snapshot_on_path(repo):
            self.utils = importlib.import_module("utils")
            self.multi_bn = importlib.import_module("models.resnet_multi_bn")
            self.lars = importlib.import_module("optimizer.lars")
        self.main = _main_body(self.script)
        self.args = self.namespace()["parser"].parse_args(["--experiment", "parity"])

    def namespace(self) -> dict:
        """A fresh namespace holding what the script's functions see (``from utils import *``,
        its imports) and ``train``, ``PGD_contrastive`` and ``parser`` read from the script."""
        ns = dict(vars(self.utils))
        ns.update(np=np, argparse=argparse, time=time, torch=torch, nn=torch.nn, os=os,
                  LARS=self.lars.LARS)
        _run(mv._top_level(self.script, ("train", "PGD_contrastive"), parser=True).body, ns,
             self.script)
        return ns

    def optimizer_statements(self):
        """``main``'s choice of optimizer and scheduler (L157-182)."""
        return [_if_on(self.main, "args.optimizer"), _if_on(self.main, "args.scheduler")]

    def model(self, bn_names):
        """``main``'s model (L83-88): the momentum ResNet-18, a 3-layer head on each encoder, the
        key encoder's parameters frozen (``_init_encoder_k``)."""
        model = self.multi_bn.resnet18_momentum(pretrained=False, bn_names=bn_names)
        ch = model.encoder_k.fc.in_features
        model.encoder_q.fc = self.multi_bn.proj_head(ch, bn_names=bn_names,
                                                     twoLayerProj=self.args.twoLayerProj)
        model.encoder_k.fc = self.multi_bn.proj_head(ch, bn_names=bn_names,
                                                     twoLayerProj=self.args.twoLayerProj)
        model._init_encoder_k()
        return model


class AIR:
    """GodXuxilie/Enhancing_ACL_via_AIR: ``pretraining.py`` and what it imports."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.script = repo / "pretraining.py"
        with _snapshot_on_path(repo):
            # models/resnet_multi_bn.py: `from utils import NormalizeByChannelMeanStd`, a class
            # of models/utils.py (there is no top-level utils.py).
            _module_from(repo / "models" / "utils.py", "utils")
            self.multi_bn = importlib.import_module("models.resnet_multi_bn")
            self.lars = importlib.import_module("optimizer.lars")
            self.air = importlib.import_module("AIR")
        meters = {}
        _run(mv._top_level(repo / "finetuning_utils.py", ("AverageMeter",)).body, meters,
             repo / "finetuning_utils.py")
        self.average_meter = meters["AverageMeter"]
        self.main = _main_body(self.script)
        self.args = self.namespace()["parser"].parse_args(["parity", "--ACL_DS", "--DynAug"])

    def namespace(self) -> dict:
        ns = dict(np=np, argparse=argparse, datetime=datetime, torch=torch, os=os,
                  AverageMeter=self.average_meter, AIR_Loss=self.air.AIR_Loss,
                  LARS=self.lars.LARS)
        _run(mv._top_level(self.script, ("cosine_annealing", "pair_cosine_similarity", "nt_xent",
                                         "PGD_contrastive", "train"), parser=True).body,
             ns, self.script)
        return ns

    def optimizer_statements(self):
        """``main``'s optimizer and scheduler (L230-253)."""
        return [_if_on(self.main, "args.optimizer"), _if_on(self.main, "args.scheduler")]

    def strength_statement(self) -> ast.If:
        """The epoch loop's ``if args.DynAug: ... strength = ...`` (L283-287)."""
        return _if_on(_epoch_loop(self.main).body, "args.DynAug")

    def train_lambda(self) -> float:
        """The ``LAMBDA`` that ``main`` passes to ``train`` (L292)."""
        for node in ast.walk(_epoch_loop(self.main)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "train":
                for keyword in node.keywords:
                    if keyword.arg == "LAMBDA":
                        return float(eval(compile(ast.Expression(keyword.value), "", "eval")))
        raise SystemExit("main() passes no LAMBDA to train()")

    def model(self, bn_names):
        """``main``'s model (L189-200, ``--model r18``)."""
        model = self.multi_bn.resnet18(pretrained=False, bn_names=bn_names)
        model.fc = self.multi_bn.proj_head(model.fc.in_features, bn_names=bn_names,
                                           twoLayerProj=self.args.twoLayerProj)
        return model


# -- air_loss ------------------------------------------------------------------------------------
AIR_LOSS_CASES = {   # name: (images N, dimension D, scale, [(weight, lambda1, lambda2), ...])
    "small": (16, 32, 1.0, [(0.0, 0.5, 0.5), (0.3, 0.5, 0.5), (2 / 3, 1.0, 0.25)]),
    "large": (32, 64, 10.0, [(0.0, 0.5, 0.5), (0.45, 0.0, 2.0)]),
}
AIR_INPUTS = ("zi", "zj", "z_orig", "zi_adv", "zj_adv")


def _air_projections(rng, n, d, scale) -> dict:
    """Five projections of n images that resemble each other as the views of one image do (so
    that the similarity distributions over the batch are not near uniform)."""
    base = rng.standard_normal((n, d))
    zi = base + 0.5 * rng.standard_normal((n, d))
    zj = base + 0.5 * rng.standard_normal((n, d))
    z_orig = base + 0.3 * rng.standard_normal((n, d))
    zi_adv = zi + 0.7 * rng.standard_normal((n, d))
    zj_adv = zj + 0.7 * rng.standard_normal((n, d))
    values = (zi, zj, z_orig, zi_adv, zj_adv)
    return {k: (scale * v).astype(np.float32) for k, v in zip(AIR_INPUTS, values)}


def vector_air_loss(air: AIR) -> dict:
    """``AIR_Loss(normalize=True, temperature=0.5, lambda1, lambda2)(zi, zj, z_orig, zi_adv,
    zj_adv, weight)`` as ``pretraining.train`` builds and calls it: the total and the four terms
    it returns (natural and adversarial contrastive losses, SIR, AIR), and the total's gradient
    with respect to each input (packed: ``parity_helpers.pack``), in float32 and float64."""
    rng = np.random.RandomState(SEEDS["air_features"])
    out = {}
    for name, (n, d, scale, cases) in AIR_LOSS_CASES.items():
        z = _air_projections(rng, n, d, scale)
        out.update({f"{name}/{k}": v for k, v in z.items()})
        out[f"{name}/cases"] = np.array(cases, np.float64)     # rows (weight, lambda1, lambda2)
        for dtype in (torch.float32, torch.float64):
            tag = "f32" if dtype == torch.float32 else "f64"
            for c, (weight, lambda1, lambda2) in enumerate(cases):
                inputs = [torch.from_numpy(z[k]).to(dtype).requires_grad_() for k in AIR_INPUTS]
                loss_fn = air.air.AIR_Loss(normalize=True, temperature=0.5, lambda1=lambda1,
                                           lambda2=lambda2)
                total, nat, adv, sir, air_term = loss_fn(*inputs, weight)
                total.backward()
                key = f"{name}/{tag}/{c}"
                out[f"{key}/terms"] = np.array(
                    [_value(v) for v in (total, nat, adv, sir, air_term)], np.float64)
                grads = {k: t.grad.numpy() for k, t in zip(AIR_INPUTS, inputs)}
                out.update(ph.pack(f"{key}/grad", grads, AIR_INPUTS, np.float64))
    return out


# -- dynacl_schedules ----------------------------------------------------------------------------
def _stand_in_batches(steps: int, with_original: bool):
    """A loader of ``steps`` batches of 2 tiny image pairs (the stand-in model's inputs)."""
    rng = np.random.RandomState(0)
    batches = []
    for _ in range(steps):
        x = torch.from_numpy(rng.uniform(0, 1, (2, 2, 3, 2, 2)).astype(np.float32))
        original = torch.from_numpy(rng.uniform(0, 1, (2, 3, 2, 2)).astype(np.float32))
        batches.append((x, original) if with_original else x)
    return mv._Loader(batches, 2 * steps)


def _dynacl_run(ref: DynACL, epochs: int, reload_frequency: int, steps_per_epoch: int,
                resume_epoch: int | None = None) -> dict:
    """``train_DynACL.main``'s optimizer, scheduler and epoch loop (L157-225) with the real
    ``train``; a stand-in model and a loader of ``steps_per_epoch`` tiny batches. Records each
    epoch's ``strength`` (the loop's variable when ``train`` starts), ``weight_adv`` (``train``'s
    local) and the learning rate of every update. ``resume_epoch``: the loop starts there with
    ``args.resume`` set, the scheduler stepped ``resume_epoch - 1`` times as the resume code
    does (L200-204)."""
    ns = ref.namespace()
    args = argparse.Namespace(**{**vars(ref.args), "epochs": epochs,
                                 "reload_frequency": reload_frequency})
    loader = _stand_in_batches(steps_per_epoch, with_original=False)
    reloads = []

    def reload(strength):
        reloads.append((ns["epoch"], strength))
        return loader

    ns.update(args=args, model=_StandIn(12), log=mv._Log(), save_dir="", num_classes=10,
              reload=reload, save_checkpoint=lambda *a, **k: None,
              validate=lambda *a, **k: (0.0, 0.0, 0.0), val_train_loader=None,
              test_loader=None)
    _run(ref.optimizer_statements(), ns, ref.script)
    rates, strengths = [], []
    _recording_step(ns["optimizer"], rates)
    train = ns["train"]

    def recording_train(*a, **k):
        strengths.append(ns["strength"])
        return train(*a, **k)

    ns["train"] = recording_train
    loop = _epoch_loop(ref.main)
    if resume_epoch is None:
        statements = [n for n in ref.main if isinstance(n, ast.Assign)
                      and ast.unparse(n.targets[0]) == "start_epoch"] + [loop]
    else:
        args.resume = True
        ns["start_epoch"] = resume_epoch
        for _ in range(resume_epoch - 1):
            ns["scheduler"].step()
        statements = [loop]
    with mv.on_cpu(), locals_at_return(train, ("epoch", "weight_adv")) as seen, \
            contextlib.redirect_stdout(io.StringIO()):
        _run(statements, ns, ref.script)
    first = 1 if resume_epoch is None else resume_epoch
    assert [s["epoch"] for s in seen] == list(range(first, epochs + 1))
    return {"strength": np.array(strengths, np.float64),
            "weight_adv": np.array([s["weight_adv"] for s in seen], np.float64),
            "lr": np.array(rates, np.float64),
            "reload_epochs": np.array([e for e, _ in reloads], np.int64),
            "epochs": np.int64(epochs), "reload_frequency": np.int64(reload_frequency),
            "steps_per_epoch": np.int64(steps_per_epoch), "first_epoch": np.int64(first),
            "swap_param": np.float64(args.swap_param), "base_lr": np.float64(args.lr)}


def _air_run(ref: AIR, epochs: int, steps_per_epoch: int) -> dict:
    """``pretraining.main``'s optimizer, scheduler and epoch loop (L230-305, ``--ACL_DS
    --DynAug``) with the real ``train`` (AIR_Loss included); a stand-in model. Records each
    epoch's ``strength`` and ``weight`` (``train``'s argument and local) and the learning rate of
    every update (the scheduler is stepped before each batch)."""
    ns = ref.namespace()
    args = argparse.Namespace(**{**vars(ref.args), "epochs": epochs})
    loader = _stand_in_batches(steps_per_epoch, with_original=True)
    ns.update(args=args, model=_StandIn(12), log=mv._Log(), save_dir="", train_loader=loader,
              get_trainset=lambda args, strength: loader,
              save_checkpoint=lambda *a, **k: None)
    _run(ref.optimizer_statements(), ns, ref.script)
    rates = []
    _recording_step(ns["optimizer"], rates)
    statements = [n for n in ref.main if isinstance(n, ast.Assign)
                  and ast.unparse(n.targets[0]) == "start_epoch"] + [_epoch_loop(ref.main)]
    with mv.on_cpu(), contextlib.redirect_stdout(io.StringIO()), \
            locals_at_return(ns["train"], ("epoch", "strength", "weight", "LAMBDA")) as seen:
        _run(statements, ns, ref.script)
    assert [s["epoch"] for s in seen] == list(range(1, epochs + 1))
    return {"strength": np.array([s["strength"] for s in seen], np.float64),
            "weight": np.array([s["weight"] for s in seen], np.float64),
            "lr": np.array(rates, np.float64), "epochs": np.int64(epochs),
            "steps_per_epoch": np.int64(steps_per_epoch),
            "lambda": np.float64(seen[0]["LAMBDA"]), "base_lr": np.float64(args.lr)}


def vector_dynacl_schedules(dynacl: DynACL, air: AIR) -> dict:
    """DynACL: a short run (20 epochs, reload every 5), the same resumed at epoch 8, and the
    script's defaults (1000 epochs, reload every 50), 2 updates per epoch. AIR: 120 epochs
    (its strength steps every 50 epochs, a constant of the script) and the defaults (1000), 2
    updates per epoch."""
    out = {}
    runs = {"dynacl_short": (20, 5, None), "dynacl_resumed": (20, 5, 8),
            "dynacl": (dynacl.args.epochs, dynacl.args.reload_frequency, None)}
    for name, (epochs, reload_frequency, resume) in runs.items():
        torch.manual_seed(0)
        values = _dynacl_run(dynacl, epochs, reload_frequency, 2, resume)
        out.update({f"{name}/{k}": v for k, v in values.items()})
    for name, epochs in {"air_short": 120, "air": air.args.epochs}.items():
        torch.manual_seed(0)
        values = _air_run(air, epochs, 2)
        out.update({f"{name}/{k}": v for k, v in values.items()})
    return out


# -- the steps -----------------------------------------------------------------------------------
def _numpy_dtype(dtype):
    return np.float64 if dtype == torch.float64 else np.float32


def _split(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def vector_dynacl_step(ref: DynACL, dtype=torch.float32) -> dict:
    """One iteration of ``train_DynACL.train`` (L267-312) at epoch ``STEP_EPOCH`` of the script's
    defaults, on one batch of ``PAIRS`` pairs: the attack (``PGD_contrastive``, 5 steps, both
    encoders through ``swap=True``) from a fed start, the adversarial and clean passes, the EMA
    of ``encoder_k``, the weighted loss, LARS. The optimizer and scheduler are ``main``'s, the
    scheduler stepped ``STEP_EPOCH - 1`` times as a resume does (L203-204).

    The two encoders get independent seeded weights (after ``_init_encoder_k`` they would be
    equal; mid-run they differ). Stored per encoder, keys without their ``encoder_q.`` /
    ``encoder_k.`` prefix: ``grad_q`` / ``update_q`` (LARS), ``update_k`` (the EMA change),
    ``stats_q`` / ``stats_k``. x' is stored in float32 also in float64 (to keep the fixture
    small: there the test continues from acl-tf's own x', equal to the reference's)."""
    bn_names = ["normal", "pgd"]
    model = ref.model(bn_names)
    out, weights = mv.seed_model(model, SEEDS["dynacl_model"])
    model.to(dtype)
    numpy_dtype = _numpy_dtype(dtype)
    ns = ref.namespace()
    args = argparse.Namespace(**vars(ref.args))
    ns.update(args=args, model=model)
    _run(ref.optimizer_statements(), ns, ref.script)
    optimizer, scheduler = ns["optimizer"], ns["scheduler"]
    for _ in range(STEP_EPOCH - 1):
        scheduler.step()
    rates = []
    _recording_step(optimizer, rates)
    x = mv.draw(out, "x", "images", SEEDS["images"], (PAIRS, 2, 3, 32, 32))
    u = mv.draw(out, "start", "uniform", SEEDS["dynacl_start"], (2 * PAIRS, 3, 32, 32))
    loader = mv._Loader([torch.from_numpy(x.astype(numpy_dtype))], PAIRS)
    captured = {}
    pgd = ns["PGD_contrastive"]

    def recording_pgd(*a, **k):
        captured["x_adv"] = pgd(*a, **k)
        return captured["x_adv"]

    ns["PGD_contrastive"] = recording_pgd
    with mv.on_cpu(), mv.precision(dtype), mv.feed("rand_like", [u]), \
            locals_at_return(ns["train"], ("weight_adv", "loss")) as seen:
        loss = ns["train"](loader, model, optimizer, scheduler, STEP_EPOCH, mv._Log(),
                           num_classes=10)
    params = dict(model.named_parameters())
    assert all(params[k].grad is None for k in params if k.startswith("encoder_k."))
    after = mv.state_of(model)
    grads = {k: p.grad.numpy() for k, p in params.items() if p.grad is not None}
    update = {k: after[k].astype(np.float64) - weights[k] for k in params}
    stats = mv.running_stats(model)
    for tag in ("q", "k"):
        prefix = f"encoder_{tag}."
        keys = list(_split(weights, prefix))
        if tag == "q":
            out.update(ph.pack("grad_q", _split(grads, prefix), keys, numpy_dtype))
        out.update(ph.pack(f"update_{tag}", _split(update, prefix), keys, numpy_dtype))
        out.update(ph.pack(f"stats_{tag}", _split(stats, prefix), keys, numpy_dtype))
    out.update(loss=np.float64(loss), lr=np.float64(rates[0]), epoch=np.int64(STEP_EPOCH),
               epochs=np.int64(args.epochs), reload_frequency=np.int64(args.reload_frequency),
               swap_param=np.float64(args.swap_param), momentum=np.float64(model.m),
               weight_adv=np.float64(seen[0]["weight_adv"]),
               lr_next_epoch=np.float64(optimizer.param_groups[0]["lr"]),
               x_adv=captured["x_adv"].numpy().astype(np.float32),
               dtype=np.array(np.dtype(numpy_dtype).name))
    return out


def vector_air_step(ref: AIR, dtype=torch.float32) -> dict:
    """One iteration of ``pretraining.train`` (L309-374) with ``--ACL_DS --DynAug`` and the
    script's defaults, at epoch ``STEP_EPOCH`` (its strength from the epoch loop's own statement,
    ``LAMBDA`` from ``main``'s call), on one batch of ``PAIRS`` images (two views and the
    original each): the attack from a fed start, the adversarial, clean and original passes,
    ``AIR_Loss``, LARS at the per-update learning rate (``main``'s scheduler stepped
    ``(STEP_EPOCH - 1) * len(train_loader)`` times as a resume does, L274-275, and once more by
    ``train``). x' is stored in float32 (as in ``vector_dynacl_step``)."""
    bn_names = ["normal", "pgd"]
    model = ref.model(bn_names)
    out, weights = mv.seed_model(model, SEEDS["air_model"])
    model.to(dtype)
    numpy_dtype = _numpy_dtype(dtype)
    x = mv.draw(out, "x", "images", SEEDS["images"], (PAIRS, 2, 3, 32, 32))
    original = mv.draw(out, "original", "images", SEEDS["original"], (PAIRS, 3, 32, 32))
    u = mv.draw(out, "start", "uniform", SEEDS["air_start"], (2 * PAIRS, 3, 32, 32))
    loader = mv._Loader([(torch.from_numpy(x.astype(numpy_dtype)),
                          torch.from_numpy(original.astype(numpy_dtype)))], PAIRS)
    ns = ref.namespace()
    args = argparse.Namespace(**vars(ref.args))
    ns.update(args=args, model=model, train_loader=loader, epoch=STEP_EPOCH)
    _run(ref.optimizer_statements(), ns, ref.script)
    _run([ref.strength_statement()], ns, ref.script)
    optimizer, scheduler = ns["optimizer"], ns["scheduler"]
    for _ in range((STEP_EPOCH - 1) * len(loader)):
        scheduler.step()
    rates = []
    _recording_step(optimizer, rates)
    captured = {}
    pgd = ns["PGD_contrastive"]

    def recording_pgd(*a, **k):
        captured["x_adv"] = pgd(*a, **k)
        return captured["x_adv"]

    ns["PGD_contrastive"] = recording_pgd
    # The normal branch's statistics between its two training passes (clean views, originals).
    snapshots = []
    hook = model.register_forward_pre_hook(
        lambda m, a: snapshots.append(mv.running_stats(m, 0)) if m.training else None)
    lam = ref.train_lambda()
    try:
        with mv.on_cpu(), mv.precision(dtype), mv.feed("rand_like", [u]), \
                contextlib.redirect_stdout(io.StringIO()), \
                locals_at_return(ns["train"], ("loss", "l1", "l2", "l3", "l4", "weight")) as seen:
            ns["train"](loader, model, optimizer, scheduler, STEP_EPOCH, mv._Log(),
                        ns["strength"], LAMBDA=lam)
    finally:
        hook.remove()
    assert len(snapshots) == 3        # adversarial, clean, original passes
    terms = seen[0]
    out.update(mv.step_outputs(model, weights, numpy_dtype))
    out.update(ph.pack("stats_mid", snapshots[2], list(weights), numpy_dtype))
    out.update(loss=np.float64(_value(terms["loss"])), nat=np.float64(_value(terms["l1"])),
               adv=np.float64(_value(terms["l2"])), sir=np.float64(_value(terms["l3"])),
               air=np.float64(_value(terms["l4"])), weight=np.float64(terms["weight"]),
               strength=np.float64(ns["strength"]), train_lambda=np.float64(lam),
               lambda1=np.float64(args.lambda1), lambda2=np.float64(args.lambda2),
               lr=np.float64(rates[0]), epoch=np.int64(STEP_EPOCH), epochs=np.int64(args.epochs),
               x_adv=captured["x_adv"].numpy().astype(np.float32),
               dtype=np.array(np.dtype(numpy_dtype).name))
    return out


VECTORS = {
    "air_loss": lambda refs: vector_air_loss(refs["air"]),
    "dynacl_schedules": lambda refs: vector_dynacl_schedules(refs["dynacl"], refs["air"]),
    "dynacl_step": lambda refs: vector_dynacl_step(refs["dynacl"]),
    "dynacl_step_f64": lambda refs: vector_dynacl_step(refs["dynacl"], torch.float64),
    "air_step": lambda refs: vector_air_step(refs["air"]),
    "air_step_f64": lambda refs: vector_air_step(refs["air"], torch.float64),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dynacl_repo", required=True, type=Path,
                        help="snapshot of PKU-ML/DYNACL")
    parser.add_argument("--air_repo", required=True, type=Path,
                        help="snapshot of GodXuxilie/Enhancing_ACL_via_AIR")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "parity")
    parser.add_argument("--only", nargs="*", choices=sorted(VECTORS), default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    refs = {"dynacl": DynACL(args.dynacl_repo.resolve()), "air": AIR(args.air_repo.resolve())}
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or VECTORS:
        arrays = VECTORS[name](refs)
        arrays["torch_version"] = np.array(torch.__version__)
        path = args.out / f"{name}.npz"
        np.savez_compressed(path, **arrays)
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
              f"{path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
