"""Keras 3 subclassed models, each with get_config so it saves and loads."""
