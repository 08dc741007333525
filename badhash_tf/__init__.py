"""badhash-tf: BadHash (ACM MM 2022) clean-label backdoor attack on deep hashing, in TF2/Keras 3."""

import os

__version__ = "0.1.0"

# TensorFlow's C++ INFO lines off unless the user sets TF_CPP_MIN_LOG_LEVEL (it must be set
# before TensorFlow loads; the programs' Python-side chatter is console.py's).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
