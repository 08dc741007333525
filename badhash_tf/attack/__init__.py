"""The BadHash attack: triggers, clean-label poisoning, and the end-to-end experiment."""
