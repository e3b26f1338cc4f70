"""Perplexity, preference accuracy, contamination and data reports."""
