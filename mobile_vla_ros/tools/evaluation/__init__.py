"""Offline and live replay of bags against a model (`mobile-vla-eval`)."""
