"""Training: the embedding network, data, sampler, losses, loop and evaluation (extra: train)."""
