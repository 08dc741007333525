"""Test set-up: 2 logical CPUs (for MirroredStrategy tests) and a fresh tfds data_dir."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from badhash_tf.training import distribute  # noqa: E402

distribute.configure_logical_cpus(2)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A tfds data_dir shared by the session; the embedded builders are built into it."""
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="session")
def two_cpu_strategy():
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
