"""Datasets: embedded tfds builders, the paper's list files, tfds catalog datasets, one tf.data input pipeline (inputs.py)."""
