"""Pre-training methods, one module each, registered in :mod:`medssl.registry`."""
