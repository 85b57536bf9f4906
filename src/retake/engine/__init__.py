"""The chunked-prefill engine: cache, attention function and the prefill/decode driver."""

from .attention import ATTENTION_NAME, causal_sdpa, register_attention
from .cache import CompressibleCache
from .engine import Engine, EngineConfig, EngineOutput, chunk_spans, keep_ratio

__all__ = [
    "ATTENTION_NAME",
    "CompressibleCache",
    "Engine",
    "EngineConfig",
    "EngineOutput",
    "causal_sdpa",
    "chunk_spans",
    "keep_ratio",
    "register_attention",
]
