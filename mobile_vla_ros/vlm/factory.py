"""The VLM feature extractor by backend name (each backend module imports transformers' classes only
when chosen). Kept apart from vlm/base so that base, which every extractor imports, imports none of them."""

from __future__ import annotations

from ..core.params import VLM_BACKENDS
from .base import ExtractorConfig, FeatureExtractor, VlmLoadError


def create_extractor(config: ExtractorConfig) -> FeatureExtractor:
    if config.backend == "kosmos2":
        from .kosmos2 import Kosmos2Extractor

        return Kosmos2Extractor(config)
    if config.backend == "kosmos2_clip":
        from .kosmos2_clip import Kosmos2ClipExtractor

        return Kosmos2ClipExtractor(config)
    if config.backend == "qwen2_5_vl":
        from .qwen2_5_vl import Qwen25VLExtractor

        return Qwen25VLExtractor(config)
    raise VlmLoadError(f"vlm_backend: {config.backend!r} is not one of {', '.join(VLM_BACKENDS)}")
