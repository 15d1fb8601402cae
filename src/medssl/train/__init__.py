"""Training loops: pre-training, downstream protocols, evaluation."""
