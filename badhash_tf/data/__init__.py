"""Datasets: embedded tfds builders, the paper's list files, tfds catalog datasets, one pipeline."""
