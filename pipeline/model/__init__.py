"""Sequences -> the GRU -> class probabilities: the network, its Lightning module, checkpoints, reports."""
