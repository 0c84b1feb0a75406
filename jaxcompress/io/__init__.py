"""Checkpoints (orbax) and compressed artifacts."""
