"""Measured prefill kernels: LLMServingSim's H100 layer latencies, carried over to a fused engine.

The ML.ENERGY runs that calibrate the hardware constants are decode-dominated, so they pin prefill
loosely. LLMServingSim's profiler (LLMServingSim 2.0, ISPASS 2026, arXiv 2602.23036; MIT) timed
every layer of vLLM's model code on one H100 with the PyTorch profiler, at 1-2,048 tokens in the
step (kv_cache 0: one sequence's prefill). Each latency (ns) is one layer instance on one GPU of a
tensor-parallel group: kernel time only, no launch or CPU overhead between kernels and no
all-reduce. `oracle/data/llmservingsim_h100_layers.csv` ships the part used (built by
`python -m sim.validation.layers build`; oracle/data/PROVENANCE.md). `sim.validation.layers`
compares them with the shipped oracles; `oracle.hwcal` fits the H100 constants on them beside the
ML.ENERGY runs (each row weighted as `oracle.hwcal.kernel_weight` chooses).

A step prefilling one sequence of N prompt tokens on a replica of `tp` H100s is summed as a fused
serving engine (vLLM) would run it:

- carried over as measured: the GEMMs (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj,
  down_proj) and `attn`, each times the model's layers (`ModelSpec.num_layers`); `embedding` at N
  tokens; `lm_head` at 1 token (vLLM computes the logits of the last prompt token only; the
  profiler computed them for all N).
- not carried over as measured: the profiler's unfused elementwise kernels (input_layernorm,
  post_layernorm, rope, act_fn, final_layernorm: several PyTorch kernels each), which an engine
  runs as one fused kernel each. Each is replaced by an estimate, not a measurement: the bytes it
  must read and write (bf16, 2 bytes an element) over the H100's datasheet memory bandwidth
  (`GpuSpec.memory_bandwidth`, 3.35 TB/s), per layer instance on one GPU (h: hidden size,
  I: intermediate size, H and H_kv: attention and KV heads, d: head dim):
    a norm (input_layernorm, post_layernorm; final_layernorm once):  reads N·h·2, writes N·h·2;
    act_fn (SiLU and multiply):  reads 2·N·(I/tp)·2, writes N·(I/tp)·2;
    rope:  reads and writes the q and k heads, 2 · N·(H/tp + max(1, H_kv/tp))·d·2
  (the norm weight, the rotary cos/sin cache and the residual add are left out).
- what the kernels do not hold, and so a kernel row's model leaves out (`KERNEL_ONLY`): the
  engine's per-step and per-sequence overheads (CPU scheduling, launches) and the all-reduces of
  tensor parallelism. The per-layer overhead stays in: at small steps it stands for kernel time
  the roofline misses (at 1 token Llama-3.1-8B's measured GEMMs take ≈ 180 µs a layer against
  ≈ 130 µs of reading its weights at 3.35 TB/s), which the measured kernels hold.

Rows: Llama-3.1-8B (TP 1, 2) and Llama-3.1-70B (TP 1, 2, 4) at powers of two 1-2,048 and
multiples of 128 up to 2,048 tokens. Llama-3.1-70B TP 1 is shipped but not used: it does not fit
one H100, so no replica of it exists. Mixtral-8x7B-v0.1 (also in the source) is left out: no
architecture for it is shipped and its expert layers would need their own carry-over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from oracle import arch
from oracle.derive import Layout, LayoutError, feature_work, roofline_parts, time_basis

LAYERS = (
    "embedding",
    "input_layernorm",
    "q_proj",
    "k_proj",
    "v_proj",
    "rope",
    "attn",
    "o_proj",
    "post_layernorm",
    "gate_proj",
    "up_proj",
    "act_fn",
    "down_proj",
    "final_layernorm",
    "lm_head",
)
"""The source's layer names (one shipped column each, `<layer>_ns`)."""
PER_LAYER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "attn")
"""Carried over as measured, once per decoder layer."""
NORMS_PER_LAYER = ("input_layernorm", "post_layernorm")
FUSED = ("input_layernorm", "post_layernorm", "rope", "act_fn", "final_layernorm")
"""Replaced by a memory-bound estimate (`fused_ns`)."""
TOKENS = tuple(sorted({2**i for i in range(12)} | set(range(128, 2049, 128))))
"""Tokens in the step of the shipped rows: powers of two 1-2,048 and multiples of 128 up to 2,048."""
GPU = "h100"
ACT_BYTES = 2.0
"""Bytes of a bf16 activation element."""


def table() -> Path:
    """The shipped per-layer latency table (ns per layer instance on one GPU)."""
    return Path(str(resources.files("oracle").joinpath("data", "llmservingsim_h100_layers.csv")))


def col(layer: str) -> str:
    """The shipped column of a layer's latency (ns)."""
    return f"{layer}_ns"


def fused_bytes(layer: str, spec: arch.ModelSpec, tp: int, tokens: int) -> float:
    """Bytes one fused `layer` kernel reads and writes on one GPU for a step of `tokens` tokens."""
    n, h = float(tokens), spec.hidden_size
    if layer in (*NORMS_PER_LAYER, "final_layernorm"):
        return 2 * n * h * ACT_BYTES  # read and write the hidden states
    if layer == "act_fn":
        return 3 * n * spec.intermediate_size / tp * ACT_BYTES  # read gate and up, write their product
    if layer == "rope":
        heads = spec.num_heads / tp + max(1.0, spec.num_kv_heads / tp)
        return 2 * n * heads * spec.head_dim * ACT_BYTES  # read and write the q and k heads
    raise ValueError(f"no memory-bound estimate for layer {layer!r}; estimated: {', '.join(FUSED)}")


def fused_ns(layer: str, spec: arch.ModelSpec, tp: int, tokens: int, gpu: arch.GpuSpec) -> float:
    """Estimated time (ns) of one fused `layer` kernel: its bytes at the GPU's datasheet bandwidth."""
    return 1e9 * fused_bytes(layer, spec, tp, tokens) / gpu.memory_bandwidth


def carried(frame: pd.DataFrame, gpu: arch.GpuSpec | None = None) -> pd.DataFrame:
    """Rows of the shipped table (`frame`) with the kernel time of the whole step in a fused engine
    (ms): measured_ms (GEMMs and attn × layers, lm_head at 1 token, embedding), elementwise_ms
    (the fused kernels' memory-bound estimate, all layers) and kernel_ms, their sum."""
    gpu = gpu or arch.load_gpu(GPU)
    out = []
    for (model, tp), part in frame.groupby(["model", "tp"], sort=False):
        spec = arch.find_model(str(model))
        if spec is None:
            raise KeyError(f"no architecture shipped for {model}")
        one = part.loc[part["tokens"] == 1, col("lm_head")]
        if len(one) != 1:
            raise ValueError(f"{model} TP {tp}: no lm_head latency at 1 token")
        layers = spec.num_layers
        body = part[[col(c) for c in PER_LAYER]].sum(axis=1) * layers
        measured_ns = body + float(one.iloc[0]) + part[col("embedding")]
        per_layer = [
            sum(fused_ns(c, spec, int(tp), int(n), gpu) for c in (*NORMS_PER_LAYER, "rope", "act_fn"))
            for n in part["tokens"]
        ]
        final = [fused_ns("final_layernorm", spec, int(tp), int(n), gpu) for n in part["tokens"]]
        elementwise_ns = np.asarray(per_layer) * layers + np.asarray(final)
        out.append(
            part[["model", "tp", "tokens"]].assign(
                measured_ms=measured_ns / 1e6,
                elementwise_ms=elementwise_ns / 1e6,
                kernel_ms=(measured_ns + elementwise_ns) / 1e6,
            )
        )
    return pd.concat(out, ignore_index=True)


def step_features(tokens: int) -> np.ndarray:
    """The feature vector of a step prefilling one sequence of `tokens` prompt tokens."""
    n = float(tokens)
    return np.array([1.0, 0.0, 0.0, 1.0, n, n * (n + 1) / 2])


KERNEL_ONLY = (2, 3, 4)
"""`oracle.derive.time_basis` columns a kernel row's model leaves out: t_step, t_seq, the all-reduces."""


@dataclass(frozen=True)
class KernelRows:
    """Carried-over prefill steps (`carried`'s rows whose replica fits its GPUs) with, per row,
    its feature vector, the time of each `oracle.derive.time_basis` constant at 1 (s;
    `KERNEL_ONLY` columns zero), and its `oracle.derive.roofline_parts` (s) with a last column
    for fp8 experts (0: dense models), the layout `oracle.hwcal.TimeRows` reads; `skipped`:
    (model, tp, why) left out; `weight`: of each row in a fit beside measured serving runs
    (`oracle.hwcal.fit_time`; 1: as much as one run's target)."""

    frame: pd.DataFrame
    features: np.ndarray
    basis: np.ndarray
    roofline: np.ndarray
    skipped: tuple[tuple[str, int, str], ...] = ()
    weight: float = 1.0

    @property
    def kernel_s(self) -> np.ndarray:
        """The measured kernel time of each step (s)."""
        return self.frame["kernel_ms"].to_numpy() / 1e3

    def models(self) -> np.ndarray:
        """Each row's model (HF id)."""
        return self.frame["model"].to_numpy()

    def subset(self, mask: np.ndarray) -> KernelRows:
        """The rows where `mask` holds."""
        frame = self.frame[mask].reset_index(drop=True)
        return replace(
            self, frame=frame, features=self.features[mask], basis=self.basis[mask], roofline=self.roofline[mask]
        )


def kernel_rows(gpu: arch.GpuSpec | None = None, frame: pd.DataFrame | None = None, weight: float = 1.0) -> KernelRows:
    """The shipped table's (or `frame`'s) carried-over steps with their time bases on `gpu`
    (default H100, the GPU they were measured on), each of `weight` in a fit."""
    gpu = gpu or arch.load_gpu(GPU)
    table_rows = carried(pd.read_csv(table()) if frame is None else frame, gpu)
    keep, bases, feats, roofs, skipped = [], [], [], [], []
    for (model, tp), part in table_rows.groupby(["model", "tp"], sort=False):
        spec = arch.find_model(str(model))
        assert spec is not None  # carried() found it
        layout = Layout(int(tp))
        try:
            layout.check(spec, gpu)
        except LayoutError as e:
            skipped.append((str(model), int(tp), str(e)))
            continue
        x = np.stack([step_features(int(n)) for n in part["tokens"]])
        work = feature_work(spec, layout, gpu)
        basis = x @ time_basis(work, gpu)
        basis[:, list(KERNEL_ONLY)] = 0.0
        roofs.append(np.tile([*roofline_parts(work, gpu), 0.0], (len(x), 1)))  # dense: no experts, not fp8
        keep.append(part)
        bases.append(basis)
        feats.append(x)
    frame_kept = pd.concat(keep, ignore_index=True)
    return KernelRows(frame_kept, np.vstack(feats), np.vstack(bases), np.vstack(roofs), tuple(skipped), weight)
