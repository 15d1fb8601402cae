"""Datasets: sources, fetching, synthetic phantoms, preprocessing, datalists and loaders."""
