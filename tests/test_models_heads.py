"""acl_tf.models.heads: the projection head and its .keras round trip per BN branch."""

import numpy as np
import pytest
from keras_roundtrip import assert_round_trip

from acl_tf.models import ProjectionHead


@pytest.mark.parametrize("num_layers", [2, 3])
def test_projection_head(num_layers, tmp_path):
    head = ProjectionHead(16, 8, num_layers=num_layers)
    f = np.random.default_rng(0).normal(size=(6, 12)).astype("float32")
    assert head(f).shape == (6, 8)
    dense_bias = [d.use_bias for d in head.dense]
    assert dense_bias == [True] + [False] * (num_layers - 1)
    head(f * 3 + 1, training=True, branch="adv")
    restored = assert_round_trip(head, f, tmp_path, calls=[{"branch": "normal"},
                                                           {"branch": "adv"}])
    for branch in ("normal", "adv"):
        np.testing.assert_allclose(restored(f, branch=branch).numpy(),
                                   head(f, branch=branch).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="2 or 3"):
        ProjectionHead(num_layers=4)
