"""Reference-layout PyTorch state dicts written from acl-tf models, as NumPy arrays: the tests'
own inverse of acl_tf.models.convert (the reference's key names, OIHW kernels, (out, in) linear
weights), shared by the conversion and import tests."""

import numpy as np


def randomize(model, seed=0):
    """Random BN parameters and moving statistics (so that the branches differ) and random dense
    biases."""
    rng = np.random.default_rng(seed)
    for var in model.variables:
        name, shape = var.path.split("/")[-1], tuple(var.shape)
        if name in ("gamma", "moving_variance"):
            var.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        elif name in ("beta", "moving_mean", "bias"):
            var.assign(rng.normal(0, 0.2, shape).astype("float32"))


def torch_conv(kernel):
    return np.ascontiguousarray(np.asarray(kernel).transpose(3, 2, 0, 1))   # HWIO -> OIHW


def torch_bn(out, name, dual_layer, multi, counter=True):
    """One BN in the reference's names: ``name.bn_list.{0 normal, 1 pgd}.*`` or ``name.*``."""
    subs = [dual_layer.bn_normal] + ([dual_layer.bn_adv] if dual_layer.dual else [])
    for i, bn in enumerate(subs):
        prefix = f"{name}.bn_list.{i}" if multi else name
        out[f"{prefix}.weight"] = np.asarray(bn.gamma)
        out[f"{prefix}.bias"] = np.asarray(bn.beta)
        out[f"{prefix}.running_mean"] = np.asarray(bn.moving_mean)
        out[f"{prefix}.running_var"] = np.asarray(bn.moving_variance)
        if counter:
            out[f"{prefix}.num_batches_tracked"] = np.array(391, np.int64)


def resnet_state_dict(encoder, multi, head=None, fc=None, normalize=True):
    out = {}
    if normalize:
        out["normalize.mean"] = np.asarray(encoder.normalize.mean, np.float32)
        out["normalize.std"] = np.asarray(encoder.normalize.std, np.float32)
    out["conv1.weight"] = torch_conv(encoder.stem_conv.kernel)
    torch_bn(out, "bn1", encoder.stem_bn, multi)
    by_name = {block.name: block for block in encoder.blocks}
    for stage in range(1, 5):
        for b in range(2):
            block = by_name[f"stage{stage}_block{b + 1}"]
            name = f"layer{stage}.{b}"
            out[f"{name}.conv1.weight"] = torch_conv(block.conv1.kernel)
            torch_bn(out, f"{name}.bn1", block.bn1, multi)
            out[f"{name}.conv2.weight"] = torch_conv(block.conv2.kernel)
            torch_bn(out, f"{name}.bn2", block.bn2, multi)
            if block.shortcut_conv is not None:
                down = f"{name}.downsample"
                out[f"{down}.{'conv' if multi else '0'}.weight"] = torch_conv(
                    block.shortcut_conv.kernel)
                torch_bn(out, f"{down}.{'bn' if multi else '1'}", block.shortcut_bn, multi)
    if head is not None:
        for i, (dense, bn) in enumerate(zip(head.dense, head.bns), start=1):
            out[f"fc.fc{i}.weight"] = np.asarray(dense.kernel).T.copy()
            if dense.use_bias:
                out[f"fc.fc{i}.bias"] = np.asarray(dense.bias)
            torch_bn(out, f"fc.bn{i}", bn, multi)
    if fc is not None:
        out["fc.weight"] = np.asarray(fc.kernel).T.copy()
        out["fc.bias"] = np.asarray(fc.bias)
    return out


def wrn_state_dict(encoder, fc):
    out = {"conv1.weight": torch_conv(encoder.stem_conv.kernel)}
    n = (encoder.depth - 4) // 6
    by_name = {block.name: block for block in encoder.blocks}
    for group in range(1, 4):
        for i in range(n):
            block = by_name[f"group{group}_block{i + 1}"]
            for root in ("block", "sub_block"):          # sub_block1: built, never used
                if root == "sub_block" and group != 1:
                    continue
                name = f"{root}{group}.layer.{i}"
                torch_bn(out, f"{name}.bn1", block.bn1, False)
                out[f"{name}.conv1.weight"] = torch_conv(block.conv1.kernel)
                torch_bn(out, f"{name}.bn2", block.bn2, False)
                out[f"{name}.conv2.weight"] = torch_conv(block.conv2.kernel)
                if block.shortcut_conv is not None:
                    out[f"{name}.convShortcut.weight"] = torch_conv(block.shortcut_conv.kernel)
    torch_bn(out, "bn1", encoder.final_bn, False)
    out["fc.weight"] = np.asarray(fc.kernel).T.copy()
    out["fc.bias"] = np.asarray(fc.bias)
    return out
