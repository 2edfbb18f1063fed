"""Request traces for the simulator: real (Azure 2023/2024, BurstGPT, Mooncake), synthetic, or any file.

`load(name_or_path, **options)` and `load_config(TraceConfig)` return a DataFrame with
`arrival_s` (float64 s from the first request, sorted), `n_in`, `n_out` (int32 tokens) and the
source's extra columns (`model`, `log_type`; `hash_ids`, each prompt's 512-token prefix-block
hashes, from Mooncake-schema JSON lines, or synthetic conversations' with `conversation`, `turn`
and `attrs["hash_block_tokens"]`); `df.attrs["load_summary"]` says what was dropped or fixed.
"""

from traces.config import NAMED_TRACES, TraceConfig
from traces.download import DownloadError, default_cache_dir
from traces.loader import load, load_config
from traces.stats import TraceStats, trace_stats
from traces.synthetic import LengthFit

__all__ = [
    "NAMED_TRACES",
    "DownloadError",
    "LengthFit",
    "TraceConfig",
    "TraceStats",
    "default_cache_dir",
    "load",
    "load_config",
    "trace_stats",
]
