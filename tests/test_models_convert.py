"""Reference PyTorch state dicts -> acl-tf models (acl_tf.models.convert), without PyTorch.

The state dicts are written by the tests from acl-tf models with their own inverse mapping (the
reference's key names, OIHW kernels, (out, in) linear weights), so a conversion must give back
models that compute what the originals compute, in both BN branches and both modes."""

import numpy as np
import pytest
from convert_helpers import randomize, resnet_state_dict, wrn_state_dict
from model_helpers import images

from acl_tf.core.errors import CheckpointError
from acl_tf.models import Classifier, ProjectionHead, ResNet18, WideResNet
from acl_tf.models.convert import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    StateDictMismatch,
    convert_state_dict,
    detect_format,
    select_prefix,
    strip_prefix,
)


def assert_same(a, b, atol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=atol)


def check_models(original, converted, x, branches, head=None, converted_head=None):
    """Equal features (and head outputs) in both modes and every branch; inference first,
    training mode (batch statistics) last since it moves the moving statistics of both."""
    for training in (False, True):
        for branch in branches:
            want = original(x, training=training, branch=branch)
            assert_same(converted(x, training=training, branch=branch), want)
            if head is not None:
                assert_same(converted_head(converted(x, training=False, branch=branch),
                                           training=training, branch=branch),
                            head(original(x, training=False, branch=branch),
                                 training=training, branch=branch))


# -- the layouts -----------------------------------------------------------------------------------


def test_multi_bn_pretraining_checkpoint_with_projection_head():
    """ACL DS pre-training: normal -> bn_list.0, pgd -> bn_list.1, the 3-layer head fc.*."""
    encoder = ResNet18(width=4, dual_bn=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    head = ProjectionHead(16, 8, num_layers=3, dual_bn=True)
    head(encoder(images(2)))
    randomize(encoder, 1)
    randomize(head, 2)
    state = resnet_state_dict(encoder, multi=True, head=head)
    assert "layer2.0.downsample.bn.bn_list.1.running_var" in state

    out = convert_state_dict(state)
    assert out.format == "multi_bn" and out.dual_bn and out.classifier is None
    assert (out.head.hidden_dim, out.head.output_dim, out.head.num_layers) == (16, 8, 3)
    assert out.encoder.width == 4 and out.mean == pytest.approx(IMAGENET_MEAN)
    assert "checkpoint" in out.normalization
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert sorted(out.skipped) == sorted(counters)
    assert sorted(out.imported) == sorted(set(state) - set(counters))
    check_models(encoder, out.encoder, images(6, seed=3), ("normal", "adv"), head, out.head)


def test_single_branch_multi_bn_and_two_layer_head():
    """Pre-training without --ACL_DS: bn_names = ['normal'], bn_list.0 only -> single BN."""
    encoder = ResNet18(width=4, dual_bn=False, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25))
    head = ProjectionHead(16, 16, num_layers=2, dual_bn=False)
    head(encoder(images(2)))
    randomize(encoder, 3)
    randomize(head, 4)
    state = resnet_state_dict(encoder, multi=True, head=head)
    assert not any(".bn_list.1." in k for k in state)
    out = convert_state_dict(state, "multi_bn")
    assert not out.dual_bn and out.head.num_layers == 2
    assert out.std == pytest.approx((0.2, 0.3, 0.25))
    check_models(encoder, out.encoder, images(4, seed=5), ("normal",), head, out.head)


def test_multi_bn_classifier():
    """DynACL++'s dual-BN AFF model: multi-BN encoder and a linear fc; default branch adv."""
    encoder = ResNet18(width=4, dual_bn=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    original = Classifier(encoder, 7)
    original(images(2))
    randomize(original, 6)
    original.fc.kernel.assign(np.random.default_rng(0).normal(0, 1, (32, 7)).astype("float32"))
    state = resnet_state_dict(encoder, multi=True, fc=original.fc)
    out = convert_state_dict(state)
    assert out.classifier.num_classes == 7 and out.classifier.branch == "adv"
    x = images(4, seed=7)
    for branch in ("normal", "adv"):
        assert_same(out.classifier(x, training=False, branch=branch),
                    original(x, training=False, branch=branch))


def test_single_bn_classifier_without_normalize_buffers_uses_imagenet_constants():
    """A TRADES/AFF fine-tuned ResNet-18 (train_trades.py): torchvision names, fc of 10."""
    encoder = ResNet18(width=4, dual_bn=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    original = Classifier(encoder, 10)
    original(images(2))
    randomize(original, 8)
    original.fc.kernel.assign(np.random.default_rng(1).normal(0, 1, (32, 10)).astype("float32"))
    state = resnet_state_dict(encoder, multi=False, fc=original.fc, normalize=False)
    assert "layer3.0.downsample.1.weight" in state and "bn1.weight" in state
    out = convert_state_dict(state)
    assert out.format == "single_bn" and not out.dual_bn
    assert out.mean == IMAGENET_MEAN and "ImageNet" in out.normalization
    x = images(4, seed=9)
    for training in (False, True):
        assert_same(out.classifier(x, training=training), original(x, training=training))
    # mean / std given explicitly win
    other = convert_state_dict(state, mean=(0, 0, 0), std=(1, 1, 1))
    assert other.mean == (0, 0, 0) and other.normalization == "given"


def test_single_bn_encoder_without_fc():
    """The reference's cvt_state_dict output with its fc removed: an encoder alone."""
    encoder = ResNet18(width=4, dual_bn=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    encoder(images(2))
    randomize(encoder, 10)
    out = convert_state_dict(resnet_state_dict(encoder, multi=False))
    assert out.head is None and out.classifier is None
    check_models(encoder, out.encoder, images(4, seed=11), ("normal", "adv"))


def test_single_bn_with_projection_head():
    """DynACL's single-BN ResNet-18 with its proj_head (plain BatchNorm1d: fc.bn1.weight)."""
    encoder = ResNet18(width=4, dual_bn=False, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    head = ProjectionHead(16, 16, num_layers=3, dual_bn=False)
    head(encoder(images(2)))
    randomize(encoder, 14)
    randomize(head, 15)
    state = resnet_state_dict(encoder, multi=False, head=head)
    assert "fc.bn3.running_var" in state
    out = convert_state_dict(state)
    assert out.format == "single_bn" and out.head.num_layers == 3 and not out.head.dual_bn
    check_models(encoder, out.encoder, images(4, seed=16), ("normal",), head, out.head)


def test_trades_wideresnet():
    """TRADES' WideResNet (depth 16, widening 1 here): no normalisation, sub_block1 skipped."""
    encoder = WideResNet(depth=16, widen_factor=1, dual_bn=False, mean=(0, 0, 0), std=(1, 1, 1))
    original = Classifier(encoder, 10)
    original(images(2))
    randomize(original, 12)
    original.fc.kernel.assign(np.random.default_rng(2).normal(0, 1, (64, 10)).astype("float32"))
    state = wrn_state_dict(encoder, original.fc)
    out = convert_state_dict(state)
    assert out.format == "trades_wrn"
    assert (out.encoder.depth, out.encoder.widen_factor) == (16, 1)
    assert out.mean == (0.0, 0.0, 0.0) and out.std == (1.0, 1.0, 1.0)
    unused = [k for k in state if k.startswith("sub_block1.")]
    assert unused and all(k in out.skipped for k in unused)
    x = images(4, seed=13)
    for training in (False, True):
        assert_same(out.classifier(x, training=training), original(x, training=training))


# -- errors ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dual_state():
    encoder = ResNet18(width=4, dual_bn=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    encoder(images(2))
    return resnet_state_dict(encoder, multi=True)


def test_unknown_missing_and_wrong_shape_are_all_listed(dual_state):
    state = dict(dual_state)
    state["layer1.0.extra.weight"] = np.zeros(3, np.float32)
    state["layer5.0.conv1.weight"] = np.zeros((4, 4, 3, 3), np.float32)
    state["bn1.bn_list.2.weight"] = np.ones(4, np.float32)          # a third branch
    del state["layer4.1.conv2.weight"], state["layer2.0.bn1.bn_list.1.running_var"]
    state["layer3.1.conv1.weight"] = np.zeros((16, 16, 1, 1), np.float32)
    state["layer1.1.bn2.bn_list.0.bias"] = np.zeros(5, np.float32)
    with pytest.raises(StateDictMismatch) as info:
        convert_state_dict(state)
    err = info.value
    assert isinstance(err, CheckpointError)
    assert err.unknown == ["bn1.bn_list.2.weight", "layer1.0.extra.weight",
                           "layer5.0.conv1.weight"]
    assert err.missing == ["layer2.0.bn1.bn_list.1.running_var", "layer4.1.conv2.weight"]
    assert err.mismatched == [("layer1.1.bn2.bn_list.0.bias", (5,), (4,)),
                              ("layer3.1.conv1.weight", (16, 16, 1, 1), (16, 16, 3, 3))]
    message = str(err)
    for key in err.unknown + err.missing + [m[0] for m in err.mismatched]:
        assert key in message
    assert "3 unknown key(s)" in message and "2 missing key(s)" in message


def test_wrong_format_lists_the_keys(dual_state):
    with pytest.raises(StateDictMismatch) as info:
        convert_state_dict(dual_state, "single_bn")
    assert "bn1.bn_list.0.weight" in info.value.unknown and "bn1.weight" in info.value.missing
    with pytest.raises(ValueError, match="Unknown format"):
        convert_state_dict(dual_state, "pytorch")


def test_normalisation_problems_are_listed_with_the_others(dual_state):
    state = {k: v for k, v in dual_state.items() if k not in ("normalize.std", "conv1.weight")}
    state["normalize.mean"] = np.zeros(4, np.float32)
    with pytest.raises(StateDictMismatch) as info:
        convert_state_dict(state)
    assert info.value.missing == ["conv1.weight", "normalize.std"]
    assert info.value.mismatched == [("normalize.mean", (4,), (3,))]


def test_values_that_are_no_arrays(dual_state):
    with pytest.raises(CheckpointError, match="no arrays"):
        convert_state_dict({**dual_state, "conv1.weight": {"nested": 1}})


def test_module_prefix_and_detection(dual_state):
    wrapped = {f"module.{k}": v for k, v in dual_state.items()}
    plain, found = strip_prefix(wrapped)
    assert found and plain.keys() == dual_state.keys()
    assert strip_prefix(dual_state) == (dual_state, False)
    with pytest.raises(CheckpointError, match="both with and without"):
        strip_prefix({"module.conv1.weight": 1, "conv1.weight": 2})
    assert detect_format(plain) == "multi_bn"
    assert detect_format(["conv1.weight", "layer1.0.bn1.weight"]) == "single_bn"
    assert detect_format(["conv1.weight", "block1.layer.0.bn1.weight"]) == "trades_wrn"
    with pytest.raises(CheckpointError, match="cannot tell the layout"):
        detect_format(["features.0.weight"])


def test_dynacl_momentum_model_needs_a_key_prefix(dual_state):
    both = {**{f"encoder_q.{k}": v for k, v in dual_state.items()},
            **{f"encoder_k.{k}": v for k, v in dual_state.items()}}
    with pytest.raises(CheckpointError, match="encoder_k"):
        convert_state_dict(both)
    inside, outside = select_prefix(both, "encoder_k.")
    assert inside.keys() == dual_state.keys() and len(outside) == len(dual_state)
    assert convert_state_dict(inside).dual_bn
    with pytest.raises(CheckpointError, match="no key"):
        select_prefix(both, "encoder_x.")
