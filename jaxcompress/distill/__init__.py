"""Distillation losses (a loss, not a Compressor): KD, hint and attention transfer."""
