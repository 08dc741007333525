"""The one training loop every stage reuses, and tf.distribute helpers."""
