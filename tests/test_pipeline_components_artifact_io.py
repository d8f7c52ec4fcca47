"""pipeline/components/artifact_io.py: staging of remote artifact URIs (``ram://``)."""

import os

import pytest
import tensorflow as tf

pytest.importorskip("tfx.v1")

from pipeline.components import artifact_io  # noqa: E402


def test_local_input_and_output_stage_remote_uris(tmp_path):
    remote = "ram://acl_tf_test/artifact"
    with artifact_io.local_output(remote) as out:
        assert not artifact_io.is_remote(out)
        os.makedirs(os.path.join(out, "sub"))
        with open(os.path.join(out, "sub", "a.txt"), "w") as f:
            f.write("hello")
    assert tf.io.gfile.exists(f"{remote}/sub/a.txt")
    with artifact_io.local_input(remote) as local:
        with open(os.path.join(local, "sub", "a.txt")) as f:
            assert f.read() == "hello"
    assert not os.path.exists(local)        # the temporary copy is gone
    with artifact_io.local_input(str(tmp_path)) as same:
        assert same == str(tmp_path)        # local URIs are used in place
    with pytest.raises(FileNotFoundError, match="no such artifact directory"):
        with artifact_io.local_input("ram://acl_tf_test/missing"):
            pass
