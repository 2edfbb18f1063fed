"""Where each named trace comes from: a file shipped in the package or a published download."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
"""Shipped traces and their PROVENANCE.md (license, citation, sha256 of the originals)."""

_AZURE_2024_RELEASE = "https://github.com/Azure/AzurePublicDataset/releases/download/dataset-llm-2024/"
_AZURE_2024_BLOB = "https://azurepublicdatasettraces.blob.core.windows.net/azurellminfererencetrace/"
_BURSTGPT_RELEASE = "https://github.com/HPMLL/BurstGPT/releases/download/v1.1/"


@dataclass(frozen=True)
class Source:
    """One original trace file: its name, where to get it and how to check it.

    `sha256` and `size_bytes` are those of the original (uncompressed) file; `rows` is its data
    row count. `shipped` is the path inside the package (gzip copy), else `urls` are tried in order.
    """

    key: str
    filename: str
    citation: str
    sha256: str | None = None
    size_bytes: int | None = None
    rows: int | None = None
    shipped: str | None = None
    urls: tuple[str, ...] = ()


_SPLITWISE = 'Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting", ISCA 2024'
_DYNAMO = (
    'Stojkovic et al., "DynamoLLM: Designing LLM Inference Clusters for Performance and Energy Efficiency", HPCA 2025'
)
_MOONCAKE = (
    'Qin et al., "Mooncake: Trading More Storage for Less Computation - A KVCache-centric Architecture '
    'for Serving LLM Chatbot", FAST 2025'
)
_BURSTGPT = (
    'Wang et al., "BurstGPT: A Real-world Workload Dataset to Optimize LLM Serving '
    'Systems", KDD 2025 (arXiv 2401.17644)'
)


def _azure_2024(kind: str, rows: int) -> Source:
    filename = f"AzureLLMInferenceTrace_{kind}_1week.csv"
    urls = (_AZURE_2024_RELEASE + filename, _AZURE_2024_BLOB + filename)
    return Source(f"azure_{kind}_2024", filename, _DYNAMO, rows=rows, urls=urls)


def _burstgpt(file: int, sha256: str, size_bytes: int) -> Source:
    filename = f"BurstGPT_{file}.csv"
    return Source(f"burstgpt_{file}", filename, _BURSTGPT, sha256, size_bytes, urls=(_BURSTGPT_RELEASE + filename,))


SOURCES: dict[str, Source] = {
    "azure_chat": Source(
        "azure_chat",
        "AzureLLMInferenceTrace_conv.csv",
        _SPLITWISE,
        "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
        719_188,
        19_366,
        shipped="azure_llm_2023/AzureLLMInferenceTrace_conv.csv.gz",
    ),
    "azure_code": Source(
        "azure_code",
        "AzureLLMInferenceTrace_code.csv",
        _SPLITWISE,
        "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
        320_117,
        8_819,
        shipped="azure_llm_2023/AzureLLMInferenceTrace_code.csv.gz",
    ),
    "mooncake_conversation": Source(
        "mooncake_conversation",
        "conversation_trace.jsonl",
        _MOONCAKE,
        "b8cbb061a85206d729d91cdc2981f43c9e0d99209dce588d3af5f7934408b9df",
        3_029_533,
        12_031,
        shipped="mooncake_fast25/conversation_trace.jsonl.gz",
    ),
    "mooncake_synthetic": Source(
        "mooncake_synthetic",
        "synthetic_trace.jsonl",
        _MOONCAKE,
        "bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131",
        1_136_313,
        3_993,
        shipped="mooncake_fast25/synthetic_trace.jsonl.gz",
    ),
    "azure_chat_2024": _azure_2024("conv", 27_303_999),
    "azure_code_2024": _azure_2024("code", 16_803_695),
    "burstgpt_1": _burstgpt(1, "4bb3783693d0a435686fbfc885615d2349bd067239079fa4b749f2e679e12122", 52_283_111),
    "burstgpt_2": _burstgpt(2, "44bf5942b03fca42c01a226a545ad3a750ec62688faecd67b6831c56a8928bf7", 144_819_209),
}


def source_for(name: str, file: int = 1) -> Source:
    """The Source of a named trace (`burstgpt` picks its `file`, 1 or 2)."""
    key = f"burstgpt_{file}" if name == "burstgpt" else name
    if key not in SOURCES:
        raise ValueError(f"no trace file is known for name {name!r}; known: {sorted(SOURCES)}")
    return SOURCES[key]


def shipped_path(source: Source) -> Path:
    """Path of the shipped gzip copy inside the package."""
    assert source.shipped is not None, source.key
    return DATA_DIR / source.shipped
