"""Evaluation: Hamming-ranking retrieval metrics and image-quality metrics."""
