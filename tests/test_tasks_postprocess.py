"""DynACL++ post-processing (acl_tf.tasks.postprocess): k-means against a NumPy Lloyd and
hand-made clusters, the cluster-label artifact, the presets, the whole run on an imported
checkpoint with a crash and resume, the encoder it writes (both BN branches, the untrained one
unchanged; single BN on request) taken by fine-tuning, and bad inputs."""

import dataclasses
import json

import keras
import numpy as np
import pytest
from conftest import SAMPLE_DIR
from convert_helpers import randomize, resnet_state_dict

from acl_tf.configs import ConfigError, PostprocessConfig, load_config
from acl_tf.core.errors import PseudoLabelError, RunDirError
from acl_tf.data.clusters import (
    ClusterLabels,
    assign_clusters,
    cluster_report,
    kmeans,
    load_cluster_labels,
    save_cluster_labels,
)
from acl_tf.models import ResNet18
from acl_tf.models.convert import IMAGENET_MEAN, IMAGENET_STD

# 64 sample images, 4 clusters, batch 32: one linear-probing and two fine-tuning epochs of two
# steps each with a 1-step attack.
TINY = [f"data.source={SAMPLE_DIR}", "data.limit=64", "batch_size=32", "eval_batch_size=64",
        "clusters.num_clusters=4", "aft.epochs=2", "aft.attack.steps=1", "log_every_steps=1"]


def numpy_lloyd(x, centres, tolerance, max_iterations=300):
    """Lloyd's iterations in float64 with kmeans_pytorch's stopping rule (no empty clusters in
    the data used here)."""
    x, centres = np.asarray(x, np.float64), np.asarray(centres, np.float64)
    for iteration in range(1, max_iterations + 1):
        nearest = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        new = np.stack([x[nearest == j].mean(0) for j in range(len(centres))])
        shift = np.linalg.norm(new - centres, axis=1).sum()
        centres = new
        if shift ** 2 < tolerance:
            break
    nearest = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    return nearest.argmin(1), centres, iteration, nearest.min(1)


def blobs(sizes=(30, 50, 20, 40), dim=6, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 4, (len(sizes), dim))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = means[truth] + rng.normal(0, spread, (len(truth), dim))
    order = rng.permutation(len(truth))
    return x[order].astype(np.float32), truth[order]


def same_partition(a, b) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_matches_a_numpy_lloyd_and_batches_do_not_matter():
    x, _ = blobs(spread=2.0)       # overlapping blobs: several iterations to converge
    init = x[[0, 1, 2, 3]]
    want, centres, iterations, distances = numpy_lloyd(x, init, tolerance=1e-8)
    for batch_size in (7, 8192):
        got = kmeans(x, 4, init=init, tolerance=1e-8, batch_size=batch_size)
        assert got.converged and got.iterations == iterations > 2
        np.testing.assert_array_equal(got.assignments, want)
        np.testing.assert_allclose(got.centres, centres, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.distances, distances, rtol=1e-4, atol=1e-4)
        assert got.inertia == pytest.approx(distances.sum(), rel=1e-5)
    nearest, squared = assign_clusters(x, centres, batch_size=5)
    np.testing.assert_array_equal(nearest, want)
    np.testing.assert_allclose(squared, distances, rtol=1e-4, atol=1e-4)
    capped = kmeans(x, 4, init=init, tolerance=0.0, max_iterations=1)
    assert capped.iterations == 1 and not capped.converged


@pytest.mark.parametrize("init", ["random", "kmeans++"])
def test_kmeans_finds_hand_made_clusters_reproducibly(init):
    x, truth = blobs()
    result = kmeans(x, 4, init=init, seed=3, restarts=4)
    assert result.assignments.dtype == np.int64 and result.centres.shape == (4, 6)
    assert same_partition(result.assignments, truth)
    assert sorted(result.sizes.tolist()) == [20, 30, 40, 50]
    again = kmeans(x, 4, init=init, seed=3, restarts=4)
    np.testing.assert_array_equal(again.assignments, result.assignments)
    np.testing.assert_array_equal(again.centres, result.centres)


def test_kmeans_reseeds_empty_clusters_and_checks_its_arguments():
    x, truth = blobs(sizes=(20, 20), dim=3)
    far = np.vstack([x[:1], np.full((1, 3), 1e3, np.float32)])   # the second centre owns nothing
    result = kmeans(x, 2, init=far, seed=1)
    assert result.sizes.min() > 0
    with pytest.raises(ValueError, match=r"num_clusters must be in \[1, 40\]"):
        kmeans(x, 41)
    with pytest.raises(ValueError, match="Unknown k-means init"):
        kmeans(x, 2, init="forgy")
    with pytest.raises(ValueError, match=r"initial centres must have shape \(2, 3\)"):
        kmeans(x, 2, init=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        kmeans(np.full((4, 2), np.nan), 2)


def test_cluster_labels_artifact_round_trip_report_and_errors(tmp_path):
    x, truth = blobs(sizes=(5, 7), dim=2)
    result = kmeans(x, 2, seed=0)
    ids = np.array([f"img{i}" for i in range(len(x))])

    class Data:
        pass

    data = Data()
    data.ids, data.labels = ids, truth
    labels = ClusterLabels.from_kmeans(result, data, encoder="enc.keras")
    path = save_cluster_labels(tmp_path / "clusters.npz", labels)
    back = load_cluster_labels(path)
    for field in ("ids", "clusters", "distances", "labels_true", "centres"):
        np.testing.assert_array_equal(getattr(back, field), getattr(labels, field))
    assert (back.iterations, back.converged, back.encoder, back.branch) == (
        result.iterations, True, "enc.keras", "normal")
    report = cluster_report(back, num_classes=2)
    assert report["purity"] == 1.0 and sorted(report["cluster_sizes"]) == [5, 7]
    assert np.array(report["contingency"]).sum() == 12 and report["empty_clusters"] == 0
    with pytest.raises(PseudoLabelError, match="does not exist"):
        load_cluster_labels(tmp_path / "none.npz")
    np.savez(tmp_path / "partial.npz", ids=ids)
    with pytest.raises(PseudoLabelError, match="missing field"):
        load_cluster_labels(tmp_path / "partial.npz")
    with pytest.raises(PseudoLabelError, match="outside"):
        ClusterLabels(ids=ids, clusters=np.full(12, 2), distances=np.zeros(12),
                      labels_true=truth, centres=result.centres)


def test_presets_and_config_errors():
    paper = load_config(PostprocessConfig, "postprocess", "cifar10_dynacl")
    assert paper == PostprocessConfig()      # the defaults are the reference's settings
    assert (paper.clusters.num_clusters, paper.clusters.init, paper.clusters.branch) == (
        10, "random", "normal")
    assert (paper.linear_probe.epochs, paper.linear_probe.optimizer.learning_rate,
            paper.linear_probe.optimizer.decay_epochs) == (10, 0.01, ())
    assert (paper.aft.epochs, paper.aft.optimizer.decay_epochs, paper.aft.attack.steps,
            paper.bn, paper.batch_size) == (25, (10, 20), 10, "adv", 512)
    air = load_config(PostprocessConfig, "postprocess", "cifar10_dynacl_air")
    assert air.clusters.tolerance == 1e-5 and air.clusters.num_clusters == 10
    assert air == PostprocessConfig(clusters=dataclasses.replace(paper.clusters, tolerance=1e-5))
    assert load_config(PostprocessConfig, "postprocess", "smoke").data.source == "sample:cifar10"
    with pytest.raises(ConfigError, match="k-means init"):
        load_config(PostprocessConfig, "postprocess", "smoke", ["clusters.init=forgy"])
    with pytest.raises(ConfigError, match="num_clusters must be >= 2"):
        load_config(PostprocessConfig, "postprocess", "smoke", ["clusters.num_clusters=1"])


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """An imported reference checkpoint (width 8, dual BN, branches made different): its
    directory holds encoder.keras and imported.json, as `acl-tf import_checkpoint` leaves it."""
    from acl_tf.tasks.import_checkpoint import import_state_dict

    encoder = ResNet18(width=8, dual_bn=True, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    encoder(np.zeros((1, 32, 32, 3), np.float32))
    randomize(encoder, 1)
    out = tmp_path_factory.mktemp("imported") / "run"
    import_state_dict(resnet_state_dict(encoder, multi=True), out, export=False)
    return out


def branch_weights(encoder):
    """{"normal" | "adv" | "shared": {path: array}}."""
    out = {"normal": {}, "adv": {}, "shared": {}}
    for w in encoder.weights:
        kind = "normal" if "/normal/" in w.path else "adv" if "/adv/" in w.path else "shared"
        out[kind][w.path] = np.asarray(w)
    return out


@pytest.mark.slow
def test_run_crash_resume_and_the_encoder_fine_tuning_takes(imported, tmp_path):
    from acl_tf.configs import FinetuneConfig
    from acl_tf.tasks.finetune import run_finetuning
    from acl_tf.tasks.postprocess import run_postprocess

    class CrashOnce(keras.callbacks.Callback):
        calls = 0

        def on_epoch_end(self, epoch, logs=None):
            CrashOnce.calls += 1
            if CrashOnce.calls == 2:        # after the first fine-tuning epoch's checkpoint
                raise RuntimeError("simulated crash")

    out = tmp_path / "pp"
    config = load_config(PostprocessConfig, "postprocess", "smoke", TINY)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_postprocess(config, out, pretrained=imported, callbacks=[CrashOnce()], verbose=0)
    assert not (out / "encoder.keras").exists()
    stamp = (out / "cluster_labels.npz").stat().st_mtime_ns
    with pytest.raises(RunDirError, match="--resume"):
        run_postprocess(config, out, pretrained=imported, verbose=0)
    summary = run_postprocess(config, out, pretrained=imported, resume=True, verbose=0)
    assert (out / "cluster_labels.npz").stat().st_mtime_ns == stamp      # k-means not rerun
    assert [h["epoch"] for h in json.loads((out / "linear_probe/history.json").read_text())] == [1]
    assert [h["epoch"] for h in json.loads((out / "aft/history.json").read_text())] == [1, 2]

    labels = load_cluster_labels(out / "cluster_labels.npz")
    report = json.loads((out / "clusters.json").read_text())
    assert len(labels) == 64 and labels.num_clusters == 4 and labels.branch == "normal"
    assert report["cluster_sizes"] == labels.sizes.tolist() == summary["cluster_sizes"]
    assert sum(report["cluster_sizes"]) == 64 and summary["finished"]
    assert summary["pretrained"] == str(imported) and summary["encoder_dual_bn"]
    assert summary["aft"]["epoch"] == 2 and 0 <= summary["aft"]["adv_acc"] <= 1
    probe = keras.saving.load_model(out / "linear_probe/last.keras", compile=False)
    assert probe.num_classes == 4 and probe.freeze_encoder and probe.branch == "adv"

    # The features the clusters came from: the normal branch of the input encoder.
    from acl_tf import data as data_lib

    before = keras.saving.load_model(imported / "encoder.keras", compile=False)
    sample = data_lib.load(SAMPLE_DIR, limit=64)
    features = before(sample.to_float(), training=False, branch="normal").numpy()
    np.testing.assert_array_equal(assign_clusters(features, labels.centres)[0], labels.clusters)

    # LPAFT_AFF: convolutions and the adversarial BN trained, the normal BN as pre-trained.
    after = keras.saving.load_model(out / "encoder.keras", compile=False)
    old, new = branch_weights(before), branch_weights(after)
    assert all(np.array_equal(old["normal"][k], new["normal"][k]) for k in old["normal"])
    assert any(not np.allclose(old["adv"][k], new["adv"][k]) for k in old["adv"])
    assert any(not np.allclose(old["shared"][k], new["shared"][k]) for k in old["shared"])
    assert after.get_config()["mean"] == pytest.approx(IMAGENET_MEAN)   # its own normalisation

    # A finished run resumes to the same summary; fine-tuning takes OUT as a pre-trained model.
    assert run_postprocess(config, out, resume=True, pretrained=imported, verbose=0) == summary
    tune = load_config(FinetuneConfig, "finetune", "smoke", [
        f"data.source={SAMPLE_DIR}", "data.limit=60", "val_size=20", "mode=slf", "epochs=1",
        "evaluate_test=false", "export=false", "eval_attack.steps=1"])
    _, metrics = run_finetuning(tune, tmp_path / "tuned", pretrained=out, verbose=0)
    assert metrics["pretrained"] == str(out) and metrics["best_epoch"] == 1


def test_single_bn_output_is_the_trained_branch():
    from acl_tf.tasks.postprocess import single_branch_encoder

    encoder = ResNet18(width=4, dual_bn=True)
    x = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    encoder(x)
    randomize(encoder, 2)
    for branch in ("adv", "normal"):
        single = single_branch_encoder(encoder, branch)
        assert not single.dual_bn and len(single.weights) < len(encoder.weights)
        np.testing.assert_allclose(single(x, training=False).numpy(),
                                   encoder(x, training=False, branch=branch).numpy(),
                                   rtol=1e-5, atol=1e-5)
    assert single_branch_encoder(single, "adv") is single


def test_bad_inputs(imported, tmp_path):
    from acl_tf.tasks.postprocess import run_postprocess

    config = load_config(PostprocessConfig, "postprocess", "smoke", TINY)
    with pytest.raises(ConfigError, match="needs a pre-trained encoder"):
        run_postprocess(config, tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="has no encoder.keras"):
        run_postprocess(config, tmp_path / "b", pretrained=tmp_path / "empty")
    with pytest.raises(ConfigError, match="does not exist"):
        run_postprocess(config, tmp_path / "c", pretrained=tmp_path / "nothing.keras")
    few = load_config(PostprocessConfig, "postprocess", "smoke", TINY + [
        "data.limit=8", "clusters.num_clusters=10"])
    with pytest.raises(ConfigError, match="num_clusters=10 exceeds the 8 training images"):
        run_postprocess(few, tmp_path / "d", pretrained=imported)
    assert not (tmp_path / "d").exists()       # nothing left of a run that failed at once
    big = load_config(PostprocessConfig, "postprocess", "smoke", TINY + ["batch_size=100"])
    with pytest.raises(ConfigError, match="batch_size 100 exceeds the 64 training images"):
        run_postprocess(big, tmp_path / "e", pretrained=imported)
