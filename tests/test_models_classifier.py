"""acl_tf.models.classifier: the linear classifier over an encoder, its frozen encoder and its
.keras round trip per BN branch."""

import numpy as np
from keras_roundtrip import assert_round_trip
from model_helpers import images, perturb_adv_statistics

from acl_tf.models import Classifier, ResNet18


def test_classifier_roundtrip_and_freeze(tmp_path):
    encoder = ResNet18(width=4)
    model = Classifier(encoder, num_classes=10, freeze_encoder=True)
    x = images()
    assert np.all(model(x).numpy() == 0), "the linear head is zero-initialised"
    assert [w.path.split("/", 1)[1] for w in model.trainable_weights] == ["fc/kernel", "fc/bias"]
    model.fc.kernel.assign(np.random.default_rng(0).normal(size=(32, 10)).astype("float32"))
    perturb_adv_statistics(encoder)
    restored = assert_round_trip(model, x, tmp_path, calls=[{"branch": "normal"},
                                                            {"branch": "adv"}])
    assert restored.freeze_encoder and restored.branch == "adv"
    for branch in ("normal", "adv"):
        np.testing.assert_allclose(restored(x, branch=branch).numpy(),
                                   model(x, branch=branch).numpy(), atol=1e-5)
    np.testing.assert_allclose(model(x).numpy(), model(x, branch="adv").numpy())
