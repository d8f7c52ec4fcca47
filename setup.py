"""acl-tf: Adversarial Contrastive Learning (NeurIPS 2020) in TensorFlow / Keras 3."""

from setuptools import find_packages, setup

setup(
    name="acl-tf",
    version="0.1.0",
    description="Robust pre-training by Adversarial Contrastive Learning, in TensorFlow / Keras 3",
    python_requires=">=3.10",
    packages=find_packages(include=["acl_tf", "acl_tf.*", "pipeline", "pipeline.*"]),
    # Exact, tested versions live in requirements.txt; these are the library's own needs.
    install_requires=[
        "tensorflow>=2.16,<2.17",
        "keras>=3.3,<4",
        "tensorflow-datasets>=4.9",
        "absl-py",
        "numpy<2",
        "matplotlib",
    ],
    extras_require={
        "pipeline": ["tfx[kfp]==1.16.0", "dill"],
        "robustness": ["adversarial-robustness-toolbox==1.20.1"],
        "test": ["pytest"],
    },
)
