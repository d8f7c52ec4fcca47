"""Writes the parity vectors ``tests/parity/*.npz`` by running the reference PyTorch code.

The reference code (ACL, and optionally TRADES for a cross-check) is imported from a snapshot
directory given on the command line, unmodified; functions that live in training scripts
(``train_simCLR.py``: ``PGD_contrastive``, ``cosine_annealing``, ``train``; ``train_trades.py``:
``train`` and the argument parser) are read from those files and executed as written, without
running the scripts. Everything runs on the CPU, in float32 (the ``*_f64`` vectors: the same in
float64): the few ``.cuda()`` calls of the reference become no-ops, and its random draws
(``torch.rand_like`` of the attacks' starts, ``torch.randn`` of the TRADES start) are fed values
from a seeded NumPy generator, so that acl-tf can start from the same points.

Neither the weights nor the inputs are stored: the generator and the tests derive them from
seeds (``tests/parity_helpers.py``); a fixture holds the seeds, a digest of what they gave, and
the reference's outputs.

Environment (the tests do not need it; see ``scripts/parity/requirements.txt``; ``PARITY_VENV``
is a directory of your choice outside the checkout)::

    python -m venv "$PARITY_VENV"
    "$PARITY_VENV"/bin/pip install -r scripts/parity/requirements.txt \
        --extra-index-url https://download.pytorch.org/whl/cpu
    "$PARITY_VENV"/bin/python scripts/parity/make_vectors.py \
        --acl_repo=SNAPSHOT_OF_ACL [--trades_repo=SNAPSHOT_OF_TRADES]

The ACL snapshot is https://github.com/VITA-Group/Adversarial-Contrastive-Learning (the files
named in docs/parity.md), the TRADES one https://github.com/yaodongyu/TRADES.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
import parity_helpers as ph  # noqa: E402  (NumPy only)

# Sizes: a full-width ResNet-18 (the reference has no width argument) on 32x32 images.
PAIRS = 4            # images per contrastive batch (8 views)
FINETUNE_BATCH = 8   # TRADES step
EVAL_BATCH = 16      # PGD-20 evaluation
SEEDS = {"ds_model": 1, "s2s_model": 2, "classifier": 3, "images": 100, "features": 200,
         "attack_start": 101, "ds_start": 102, "finetune_images": 300, "trades_start": 301,
         "eval_images": 400, "eval_start": 401}


# -- importing the reference ---------------------------------------------------------------------
def _stub_torchvision_utils():
    """The reference models import ``torchvision.models.utils.load_state_dict_from_url`` (gone
    from recent torchvision) for pretrained ImageNet weights they never load here."""
    try:
        importlib.import_module("torchvision.models.utils")
        return
    except ImportError:
        pass

    def load_state_dict_from_url(*args, **kwargs):
        raise RuntimeError("the parity vectors use no downloaded weights")

    try:
        importlib.import_module("torchvision.models")
    except ImportError:
        sys.modules.setdefault("torchvision", types.ModuleType("torchvision"))
        sys.modules["torchvision.models"] = types.ModuleType("torchvision.models")
    stub = types.ModuleType("torchvision.models.utils")
    stub.load_state_dict_from_url = load_state_dict_from_url
    sys.modules["torchvision.models.utils"] = stub


def _top_level(path: Path, functions=(), parser=False) -> ast.Module:
    """The named top-level functions (or classes) of a script (and its ``parser`` statements) as
    a module."""
    tree = ast.parse(path.read_text())
    body = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in functions:
            body.append(node)
        elif parser and _is_parser_statement(node):
            body.append(node)
    found = {n.name for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    if set(functions) - found:
        raise SystemExit(f"{path} lacks {sorted(set(functions) - found)}")
    return ast.Module(body=body, type_ignores=[])


def _is_parser_statement(node) -> bool:
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == "parser" for t in node.targets)
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id == "parser" and func.attr == "add_argument")
    return False


class Reference:
    """The reference modules and script functions."""

    def __init__(self, acl_repo: Path, trades_repo: Path | None):
        self.acl_repo = acl_repo
        _stub_torchvision_utils()
        sys.path.insert(0, str(acl_repo))
        self.utils = importlib.import_module("utils")
        self.multi_bn = importlib.import_module("models.resnet_multi_bn")
        self.resnet = importlib.import_module("models.resnet")
        self.lars = importlib.import_module("optimizer.lars")
        self.trades = importlib.import_module("trades")
        # train_simCLR.py: its functions, run in a namespace holding what `from utils import *`
        # gives the script.
        self.simclr = dict(vars(self.utils))
        self.simclr.update(np=np, argparse=argparse)
        exec(compile(_top_level(acl_repo / "train_simCLR.py",
                                ("cosine_annealing", "PGD_contrastive", "train"), parser=True),
                     str(acl_repo / "train_simCLR.py"), "exec"), self.simclr)
        self.simclr_args = self.simclr["parser"].parse_args(["parity"])
        self.finetune = dict(vars(self.utils))
        self.finetune.update(trades_loss=self.trades.trades_loss, np=np, argparse=argparse)
        exec(compile(_top_level(acl_repo / "train_trades.py", ("train",), parser=True),
                     str(acl_repo / "train_trades.py"), "exec"), self.finetune)
        self.finetune_args = self.finetune["parser"].parse_args(["parity"])
        self.trades_repo = None
        if trades_repo is not None:
            spec = importlib.util.spec_from_file_location("trades_repo_trades",
                                                          trades_repo / "trades.py")
            self.trades_repo = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(self.trades_repo)

    def pretrain_model(self, bn_names):
        """The model of ``train_simCLR.main`` (L66-69): multi-BN ResNet-18 + 3-layer head."""
        model = self.multi_bn.resnet18(pretrained=False, bn_names=bn_names)
        model.fc = self.multi_bn.proj_head(model.fc.in_features, bn_names=bn_names,
                                           twoLayerProj=False)
        return model

    def classifier(self):
        """The model of ``train_trades.main`` (L238): single-BN ResNet-18, 10 classes."""
        return self.resnet.resnet18(num_classes=10)


class _Log:
    def info(self, msg):
        pass


class _Loader(list):
    """A list of batches with the ``dataset`` attribute the training loops log."""

    def __init__(self, batches, size):
        super().__init__(batches)
        self.dataset = range(size)


@contextlib.contextmanager
def on_cpu():
    """``tensor.cuda()`` returns the tensor itself (the reference calls it unconditionally)."""
    saved = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = saved


@contextlib.contextmanager
def precision(dtype):
    """Runs the reference in ``dtype``: torch's default dtype (the tensors it creates) set to it;
    the caller converts the model (``model.to(dtype)``) and the inputs."""
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


@contextlib.contextmanager
def feed(name: str, arrays):
    """``torch.<name>(...)`` returns the given arrays in turn (shape-checked) instead of
    drawing; every one must be used."""
    saved = getattr(torch, name)
    queue = list(arrays)

    def fake(*args, **kwargs):
        value = queue.pop(0)
        shape = args[0].shape if name.endswith("_like") else (
            tuple(args[0]) if len(args) == 1 and not isinstance(args[0], int) else tuple(args))
        if tuple(shape) != value.shape:
            raise AssertionError(f"torch.{name}{tuple(shape)} fed {value.shape}")
        # The draws are float32 (as the reference's); in a float64 run they are widened.
        return torch.from_numpy(np.array(value, np.float32)).to(torch.get_default_dtype())

    setattr(torch, name, fake)
    try:
        yield
    finally:
        setattr(torch, name, saved)
    if queue:
        raise AssertionError(f"{len(queue)} fed torch.{name} values unused")


# -- weights -------------------------------------------------------------------------------------
def _kinds(model):
    kinds = {}
    for prefix, module in model.named_modules():
        name = prefix + "." if prefix else ""
        if isinstance(module, torch.nn.Conv2d):
            kinds[name + "weight"] = "conv"
        elif isinstance(module, torch.nn.Linear):
            kinds[name + "weight"] = "linear_weight"
            kinds[name + "bias"] = "linear_bias"
        elif isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            kinds.update({name + "weight": "bn_weight", name + "bias": "bn_bias",
                          name + "running_mean": "bn_mean", name + "running_var": "bn_var",
                          name + "num_batches_tracked": "count"})
    return kinds


def seed_model(model, seed: int, prefix: str = "model", overrides=None) -> tuple[dict, dict]:
    """Loads the seeded weights (with ``overrides``: ``{key: array}`` replacing some) into
    ``model``; returns (npz entries describing them, weights)."""
    state = model.state_dict()
    keys = list(state)
    kinds = _kinds(model)
    kind_list = [kinds.get(k, "buffer") for k in keys]
    buffers = {k: state[k].numpy() for k, kind in zip(keys, kind_list) if kind == "buffer"}
    weights = ph.reference_weights(keys, [tuple(state[k].shape) for k in keys], kind_list, seed,
                                   buffers)
    overrides = {k: np.asarray(v, np.float32) for k, v in (overrides or {}).items()}
    weights.update(overrides)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    entries = {f"{prefix}.keys": np.array(keys), f"{prefix}.kinds": np.array(kind_list),
               f"{prefix}.shapes": np.array([",".join(map(str, state[k].shape)) for k in keys]),
               f"{prefix}.seed": np.int64(seed), f"{prefix}.digest": np.array(ph.digest(weights))}
    for key, value in buffers.items():
        entries[f"{prefix}.buffer/{key}"] = value
    for key, value in overrides.items():
        entries[f"{prefix}.override/{key}"] = value
    return entries, weights


def state_of(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def running_stats(model, bn_index=None) -> dict:
    """``{key: array}`` of the running means and variances (of ``bn_list.<bn_index>``)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            if bn_index is None or f"bn_list.{bn_index}." in key:
                out[key] = value.numpy().copy()
    return out


def step_outputs(model, weights: dict, numpy_dtype) -> dict:
    """What one training step of ``model`` leaves (its gradients, the update of every weight
    from ``weights`` and the BN running statistics), packed for the fixture."""
    keys = list(weights)
    grads = {k: p.grad.numpy() for k, p in model.named_parameters()}
    after = state_of(model)
    update = {k: after[k].astype(np.float64) - weights[k] for k in grads}
    return {**ph.pack("grad", grads, keys, numpy_dtype),
            **ph.pack("update", update, keys, numpy_dtype),
            **ph.pack("stats", running_stats(model), keys, numpy_dtype)}


def draw(out: dict, name: str, kind: str, seed: int, shape) -> np.ndarray:
    """Input ``name`` drawn from ``seed`` (``parity_helpers.draw_input``); its description (not
    its values) goes into ``out``."""
    out.update(ph.input_entries(name, kind, seed, shape))
    return ph.draw_input(kind, seed, shape)


# -- the vectors ---------------------------------------------------------------------------------
def vector_forward(ref: Reference) -> dict:
    """Encoder features and head outputs of the DS model per BN branch, inference and training
    mode, and the branch's running statistics after the training-mode pass."""
    model = ref.pretrain_model(["normal", "pgd"])
    out, weights = seed_model(model, SEEDS["ds_model"])
    x = draw(out, "x", "images", SEEDS["images"], (2 * PAIRS, 3, 32, 32))
    features = {}
    model.fc.register_forward_hook(lambda m, args, result: features.update(f=args[0]))
    for index, name in enumerate(["normal", "pgd"]):
        for mode in ("eval", "train"):
            model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
            getattr(model, mode)()
            with torch.no_grad():
                z = model(torch.from_numpy(x), name)
            out[f"{name}/{mode}/features"] = features["f"].numpy().copy()
            out[f"{name}/{mode}/projection"] = z.numpy().copy()
            if mode == "train":
                out.update(ph.pack(f"{name}/stats", running_stats(model, index), list(weights)))
    return out


def vector_nt_xent(ref: Reference) -> dict:
    """``utils.nt_xent`` (t = 0.5, the default every caller uses) and its gradient on fixed
    features; rows interleave the two views of each image."""
    rng = np.random.RandomState(SEEDS["features"])
    out = {}
    for name, (n, d, scale) in {"small": (16, 32, 1.0), "large": (64, 128, 10.0)}.items():
        z = (scale * rng.standard_normal((n, d))).astype(np.float32)
        zt = torch.from_numpy(z).requires_grad_()
        loss = ref.utils.nt_xent(zt)
        loss.backward()
        out.update({f"{name}/z": z, f"{name}/loss": np.float32(loss.item()),
                    f"{name}/grad": zt.grad.numpy().copy()})
    return out


def vector_pretrain_attack(ref: Reference) -> dict:
    """``PGD_contrastive`` (train_simCLR.py) as ``train`` calls it for DS: 5 steps, eps 8/255,
    step 2/255, inference-mode BN on the ``pgd`` branch, from a fed uniform start."""
    model = ref.pretrain_model(["normal", "pgd"])
    out, _ = seed_model(model, SEEDS["ds_model"])
    x = draw(out, "x", "images", SEEDS["images"], (2 * PAIRS, 3, 32, 32))
    u = draw(out, "start", "uniform", SEEDS["attack_start"], x.shape)
    losses = []
    nt_xent = ref.simclr["nt_xent"]

    def recording(features, *args, **kwargs):
        loss = nt_xent(features, *args, **kwargs)
        losses.append(loss.item())
        return loss

    ref.simclr["nt_xent"] = recording
    try:
        with feed("rand_like", [u]):
            x_adv = ref.simclr["PGD_contrastive"](model, torch.from_numpy(x),
                                                  iters=ref.simclr_args.pgd_iter,
                                                  singleImg=False)
    finally:
        ref.simclr["nt_xent"] = nt_xent
    eps = 8.0 / 255.0
    delta0 = torch.from_numpy(u) * eps * 2 - eps        # as PGD_contrastive computes it
    with torch.no_grad():
        final = nt_xent(model.eval()(x_adv, "pgd")).item()
    out.update(delta0=delta0.numpy(), x_adv=x_adv.numpy(),
               step_losses=np.array(losses, np.float64), final_loss=np.float64(final),
               steps=np.int64(ref.simclr_args.pgd_iter))
    return out


def _simclr_step(ref: Reference, bn_names, seed, start_seed, dtype=torch.float32) -> dict:
    """One iteration of ``train_simCLR.train`` (the script's LARS, cosine scheduler and model),
    with a one-batch loader: ``scheduler.step()`` then the DS (or S2S) loss, backward, LARS.

    ``dtype`` float64: the same in double precision (weights, images and start widened from
    their float32 values), where no ReLU input rounds to the other side of 0 and the two
    frameworks agree to rounding."""
    model = ref.pretrain_model(bn_names)
    out, weights = seed_model(model, seed)
    model.to(dtype)
    numpy_dtype = np.float64 if dtype == torch.float64 else np.float32
    args = argparse.Namespace(**vars(ref.simclr_args))
    args.ACL_DS = len(bn_names) == 2
    x = draw(out, "x", "images", SEEDS["images"], (PAIRS, 2, 3, 32, 32))   # [B, 2, C, H, W]
    loader = _Loader([torch.from_numpy(x.astype(numpy_dtype))], PAIRS)
    # train_simCLR.main, L122 and L131-139, with the script's defaults.
    optimizer = ref.lars.LARS(model.parameters(), lr=args.lr, weight_decay=1e-6)
    cosine = ref.simclr["cosine_annealing"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda=lambda step: cosine(step, args.epochs * len(loader), 1,
                                                 1e-6 / args.lr, warmup_steps=10 * len(loader)))
    captured = {}
    pgd = ref.simclr["PGD_contrastive"]

    def recording_pgd(*a, **k):
        captured["x_adv"] = pgd(*a, **k)
        return captured["x_adv"]

    ref.simclr.update(args=args, PGD_contrastive=recording_pgd)
    starts = []
    if args.ACL_DS:
        starts = [draw(out, "start", "uniform", start_seed, (2 * PAIRS, 3, 32, 32))]
    try:
        with on_cpu(), precision(dtype), feed("rand_like", starts):
            loss = ref.simclr["train"](loader, model, optimizer, scheduler, 1, _Log(), 10)
    finally:
        ref.simclr["PGD_contrastive"] = pgd
    out.update(step_outputs(model, weights, numpy_dtype))
    out.update(loss=np.float64(loss), lr=np.float64(optimizer.param_groups[0]["lr"]),
               epochs=np.int64(args.epochs), base_lr=np.float64(args.lr),
               dtype=np.array(np.dtype(numpy_dtype).name))
    if starts:
        out.update(x_adv=captured["x_adv"].numpy().astype(numpy_dtype))
    return out


def vector_ds_step(ref):
    return _simclr_step(ref, ["normal", "pgd"], SEEDS["ds_model"], SEEDS["ds_start"])


def vector_s2s_step(ref):
    return _simclr_step(ref, ["normal"], SEEDS["s2s_model"], None)


def vector_ds_step_f64(ref):
    return _simclr_step(ref, ["normal", "pgd"], SEEDS["ds_model"], SEEDS["ds_start"],
                        torch.float64)


def vector_s2s_step_f64(ref):
    return _simclr_step(ref, ["normal"], SEEDS["s2s_model"], None, torch.float64)


def _labels_mostly_predicted(model, x, seed, wrong: int):
    """Labels = the model's clean predictions except for ``wrong`` random ones, so that the
    attack has correctly classified examples to flip."""
    with torch.no_grad():
        pred = model.eval()(torch.from_numpy(x)).argmax(1).numpy()
    rng = np.random.RandomState(seed)
    labels = pred.copy()
    flip = rng.choice(len(x), wrong, replace=False)
    labels[flip] = (pred[flip] + 1 + rng.randint(0, 9, wrong)) % 10
    return labels.astype(np.int64)


def vector_trades_step(ref: Reference, dtype=torch.float32) -> dict:
    """One iteration of ``train_trades.train`` with the script's defaults (TRADES beta 6, 10
    attack steps of 2/255 in eps 8/255, SGD lr 0.1 momentum 0.9 weight decay 2e-4, the
    MultiStepLR stepped once as ``main`` does before epoch 1), fed start x + 0.001 N(0, 1).
    ``dtype`` float64: in double precision (see ``_simclr_step``)."""
    args = ref.finetune_args
    model = ref.classifier()
    out, weights = seed_model(model, SEEDS["classifier"])
    x = draw(out, "x", "images", SEEDS["finetune_images"], (FINETUNE_BATCH, 3, 32, 32))
    y = _labels_mostly_predicted(model, x, SEEDS["finetune_images"] + 1, 2)
    noise = draw(out, "noise", "normal", SEEDS["trades_start"], x.shape)
    model.to(dtype)
    numpy_dtype = np.float64 if dtype == torch.float64 else np.float32
    x_in = torch.from_numpy(x.astype(numpy_dtype))
    # train_trades.main, L240-243 and L302.
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    milestones = list(map(int, args.decreasing_lr.split(",")))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    scheduler.step()
    inputs = []
    hook = model.register_forward_pre_hook(
        lambda m, a: inputs.append(a[0].detach().clone()) if m.training else None)
    losses = []
    trades_loss = ref.finetune["trades_loss"]

    def recording(*a, **k):
        loss = trades_loss(*a, **k)
        losses.append(loss.item())
        return loss

    ref.finetune["trades_loss"] = recording
    try:
        with on_cpu(), precision(dtype), feed("randn", [noise]):
            ref.finetune["train"](args, model, torch.device("cpu"),
                                  _Loader([(x_in, torch.from_numpy(y))], len(x)),
                                  optimizer, 1, _Log())
    finally:
        ref.finetune["trades_loss"] = trades_loss
        hook.remove()
    out.update(step_outputs(model, weights, numpy_dtype))
    out.update(y=y, x_adv=inputs[1].numpy(), loss=np.float64(losses[0]),
               lr=np.float64(optimizer.param_groups[0]["lr"]), beta=np.float64(args.beta),
               steps=np.int64(args.num_steps_train), dtype=np.array(np.dtype(numpy_dtype).name))
    if ref.trades_repo is not None and dtype == torch.float32:
        # TRADES' own trades_loss on the same weights, inputs and start (no optimizer step).
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        with on_cpu(), feed("randn", [noise]):
            loss = ref.trades_repo.trades_loss(
                model, torch.from_numpy(x), torch.from_numpy(y), optimizer,
                step_size=args.step_size, epsilon=args.epsilon,
                perturb_steps=args.num_steps_train, beta=args.beta)
        out["trades_repo_loss"] = np.float64(loss.item())
    return out


def vector_pgd20(ref: Reference, dtype=torch.float32) -> dict:
    """``utils.eval_adv_test`` as ``train_trades.py`` runs it (PGD-20, eps 8/255, step 2/255,
    uniform start, inference-mode BN) on the seeded classifier, fed the start. ``dtype``
    float64: in double precision (see ``_simclr_step``)."""
    args = ref.finetune_args
    model = ref.classifier()
    _, weights = seed_model(model, SEEDS["classifier"])
    x = ph.draw_input("images", SEEDS["eval_images"], (EVAL_BATCH, 3, 32, 32))
    # The seeded network predicts one class for these images and PGD-20 flips every one; a
    # bias of 1.5 on that class makes about half of them survive, so that the vector has both.
    with torch.no_grad():
        top = int(model.eval()(torch.from_numpy(x)).argmax(1).mode().values)
    bias = weights["fc.bias"].copy()
    bias[top] += 1.5
    out, _ = seed_model(model, SEEDS["classifier"], overrides={"fc.bias": bias})
    draw(out, "x", "images", SEEDS["eval_images"], x.shape)
    y = _labels_mostly_predicted(model, x, SEEDS["eval_images"] + 1, 4)
    u = draw(out, "start", "uniform", SEEDS["eval_start"], x.shape)
    model.to(dtype)
    x = x.astype(np.float64 if dtype == torch.float64 else np.float32)
    captured = {}
    attack = ref.utils.pgd_attack

    def recording(*a, **k):
        captured["x_adv"] = attack(*a, **k)
        return captured["x_adv"]

    ref.utils.pgd_attack = recording
    try:
        with precision(dtype), feed("rand_like", [u]):
            accuracy = ref.utils.eval_adv_test(
                model, torch.device("cpu"), [(torch.from_numpy(x), torch.from_numpy(y))],
                epsilon=args.epsilon, alpha=args.step_size,
                criterion=torch.nn.functional.cross_entropy, log=_Log(),
                attack_iter=args.num_steps_test)
    finally:
        ref.utils.pgd_attack = attack
    with torch.no_grad():
        logits_adv = model.eval()(captured["x_adv"]).numpy()
        logits = model.eval()(torch.from_numpy(x)).numpy()
    out.update(y=y, x_adv=captured["x_adv"].numpy(), logits=logits,
               logits_adv=logits_adv, accuracy=np.float64(float(accuracy) / 100.0),
               steps=np.int64(args.num_steps_test),
               dtype=np.array(np.dtype(x.dtype).name))
    return out


def vector_trades_step_f64(ref):
    return vector_trades_step(ref, torch.float64)


def vector_pgd20_f64(ref):
    return vector_pgd20(ref, torch.float64)


def vector_schedules(ref: Reference) -> dict:
    """The learning rate of every optimizer step of short runs, from the scripts' schedulers:
    pre-training (``cosine_annealing`` in a LambdaLR, 10 warm-up epochs, lr 5.0 to 1e-6, the
    scheduler stepped before each batch) and fine-tuning (MultiStepLR at ``--decreasing_lr``
    15,20, stepped before each epoch)."""
    out = {}
    args = ref.simclr_args
    cosine = ref.simclr["cosine_annealing"]
    for name, (epochs, steps_per_epoch) in {"pretrain": (15, 4), "pretrain_long": (40, 3)}.items():
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = ref.lars.LARS([param], lr=args.lr, weight_decay=1e-6)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda=lambda step, e=epochs, n=steps_per_epoch: cosine(
                step, e * n, 1, 1e-6 / args.lr, warmup_steps=10 * n))
        rates = []
        for _ in range(epochs):                 # train_simCLR.train: scheduler.step() per batch
            for _ in range(steps_per_epoch):
                scheduler.step()
                rates.append(optimizer.param_groups[0]["lr"])
                optimizer.step()
        out.update({f"{name}/lr": np.array(rates, np.float64),
                    f"{name}/epochs": np.int64(epochs),
                    f"{name}/steps_per_epoch": np.int64(steps_per_epoch),
                    f"{name}/base_lr": np.float64(args.lr)})
    fargs = ref.finetune_args
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=fargs.lr, momentum=fargs.momentum,
                                weight_decay=fargs.weight_decay)
    milestones = list(map(int, fargs.decreasing_lr.split(",")))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    steps_per_epoch = 3
    rates = []
    for _ in range(fargs.epochs):      # train_trades.main: scheduler.step() before each epoch
        scheduler.step()
        for _ in range(steps_per_epoch):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
    out.update({"finetune/lr": np.array(rates, np.float64),
                "finetune/epochs": np.int64(fargs.epochs),
                "finetune/steps_per_epoch": np.int64(steps_per_epoch),
                "finetune/base_lr": np.float64(fargs.lr),
                "finetune/milestones": np.array(milestones, np.int64)})
    # The README's command: --decreasing_lr 40,60 --epochs 100 (one step per epoch here).
    readme = fargs.__class__(**{**vars(fargs), "decreasing_lr": "40,60", "epochs": 100})
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=readme.lr, momentum=readme.momentum,
                                weight_decay=readme.weight_decay)
    milestones = list(map(int, readme.decreasing_lr.split(",")))
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    rates = []
    for _ in range(readme.epochs):
        scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
    out.update({"finetune_readme/lr": np.array(rates, np.float64),
                "finetune_readme/epochs": np.int64(readme.epochs),
                "finetune_readme/steps_per_epoch": np.int64(1),
                "finetune_readme/base_lr": np.float64(readme.lr),
                "finetune_readme/milestones": np.array(milestones, np.int64)})
    return out


VECTORS = {"forward": vector_forward, "nt_xent": vector_nt_xent,
           "pretrain_attack": vector_pretrain_attack, "ds_step": vector_ds_step,
           "s2s_step": vector_s2s_step, "ds_step_f64": vector_ds_step_f64,
           "s2s_step_f64": vector_s2s_step_f64, "trades_step": vector_trades_step,
           "trades_step_f64": vector_trades_step_f64, "pgd20": vector_pgd20,
           "pgd20_f64": vector_pgd20_f64, "schedules": vector_schedules}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--acl_repo", required=True, type=Path,
                        help="snapshot of VITA-Group/Adversarial-Contrastive-Learning")
    parser.add_argument("--trades_repo", type=Path, default=None,
                        help="snapshot of yaodongyu/TRADES (optional cross-check of the "
                             "TRADES loss)")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "parity")
    parser.add_argument("--only", nargs="*", choices=sorted(VECTORS), default=None)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    ref = Reference(args.acl_repo.resolve(),
                    args.trades_repo.resolve() if args.trades_repo else None)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or VECTORS:
        arrays = VECTORS[name](ref)
        arrays["torch_version"] = np.array(torch.__version__)
        path = args.out / f"{name}.npz"
        np.savez_compressed(path, **arrays)
        print(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}: "
              f"{path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
