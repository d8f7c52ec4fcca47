"""pipeline/components/tfds_example_gen.py: TfdsExampleGen writes what the library reads (TFDS
mocked) and names an unknown dataset."""

import os

import pytest

pytest.importorskip("tfx.v1")

from pipeline_helpers import artifacts, make_output, tiny_stages  # noqa: E402

from acl_tf import data as data_lib  # noqa: E402
from pipeline.components import artifact_io  # noqa: E402
from pipeline.components.tfds_example_gen import TfdsExampleGen  # noqa: E402


def test_tfds_example_gen_writes_what_the_library_reads(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    examples = make_output(artifacts.Examples, tmp_path / "examples")
    with tfds.testing.mock_data(num_examples=12):
        TfdsExampleGen.test_call(examples=examples, dataset="cifar10", tfds_split="train",
                                 split_name="train")
    assert artifact_io.split_names(examples) == ["train"]
    assert os.path.isfile(tmp_path / "examples" / "Split-train" / "data.tfrecord.gz")
    data = artifact_io.load_split(examples, examples.uri, "train",
                                  tiny_stages("finetune").pretrain.data)
    assert len(data) == 12 and examples.get_int_custom_property("num_examples") == 12
    with pytest.raises(data_lib.DataError, match="neither an existing file"):
        TfdsExampleGen.test_call(examples=make_output(artifacts.Examples, tmp_path / "x"),
                                 dataset="no_such_dataset_xyz", tfds_split="train",
                                 split_name="train")
