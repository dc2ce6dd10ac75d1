"""Metrics (ROUGE, chrF, bits per byte) and `akshara-hf evaluate`."""
