"""Datasets: embedded tfds builders, the paper's list files, tfds catalog datasets, and the
one tf.data input pipeline (inputs.py)."""
