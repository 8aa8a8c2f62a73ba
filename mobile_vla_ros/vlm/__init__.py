"""Vision-language feature extractors (transformers), loaded from local directories only."""
