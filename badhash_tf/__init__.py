"""badhash-tf: BadHash (ACM MM 2022) clean-label backdoor attack on deep hashing, in TF2/Keras 3."""

__version__ = "0.1.0"
