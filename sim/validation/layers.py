"""Prefill step time against measured GPU kernels: LLMServingSim's H100 layer latencies, carried over.

    python -m sim.validation.layers [out=DIR]
    python -m sim.validation.layers build SRC=DIR [out=FILE]

Why: the ML.ENERGY runs that calibrate the hardware constants are decode-dominated, so prefill is
pinned loosely (`sim.validation.prefill` checks it against Splitwise's Llama-2-70B prompt times).
This is a second check, kernel by kernel: LLMServingSim's profiler (LLMServingSim 2.0, ISPASS
2026, arXiv 2602.23036; MIT) timed every layer of vLLM's model code on one H100 with the PyTorch
profiler, at 1-2,048 tokens in the step (kv_cache 0: one sequence's prefill). Each latency (ns) is
one layer instance on one GPU of a tensor-parallel group: kernel time only, no launch or CPU
overhead between kernels and no all-reduce. `oracle/data/llmservingsim_h100_layers.csv` ships the
part used (`build` makes it from the source tree; oracle/data/PROVENANCE.md).

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
- not in the tables: the all-reduces of tensor parallelism. For tp > 1 the simulator's own
  all-reduce time of the step is added (`oracle.derive.feature_work`'s `comm_s`: 2 all-reduces a
  layer, each the collective latency plus N·h·2 bytes·2(tp−1)/tp at the GPU's all-reduce bus
  bandwidth, times the calibrated `comm_scale`), so the TP rows check everything but the all-reduce.
- the engine's overhead on top of kernels: the calibrated H100 `step_overhead_s` (≈ 0 s) plus
  `seq_overhead_s` (≈ 43 µs, the step's one sequence), from `oracle.build.shipped_constants`. The
  calibrated `layer_overhead_s` (≈ 63 µs a layer) is not added: at small steps it stands for
  kernel time the roofline misses, which the measured kernels already hold (at 1 token Llama-3.1-8B's
  measured GEMMs take ≈ 180 µs a layer against ≈ 130 µs of reading its weights at 3.35 TB/s).

engine_ms = kernel_ms + allreduce_ms + overhead_ms is set against the shipped oracle's step time
for that step, `Oracle.step_time([1, 0, 0, 1, N, N(N+1)/2])` (`oracle.features`; no power cap);
error_pct = 100·(simulated/engine − 1). Errors are summarised for 128-2,048 tokens and, apart,
below 128.

Rows: Llama-3.1-8B (TP 1, 2) and Llama-3.1-70B (TP 1, 2, 4) at powers of two 1-2,048 and
multiples of 128 up to 2,048 tokens. Llama-3.1-70B TP 1 is shipped but not compared: it does not fit
one H100, so no oracle exists. Mixtral-8x7B-v0.1 (also in the source) is left out: no architecture
for it is shipped (oracle/data/hardware_model_architectures.csv) and so no oracle, and its expert
layers would need their own carry-over.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from oracle import arch
from oracle.build import shipped_constants
from oracle.derive import Layout, LayoutError, comm_scale, feature_work
from oracle.model import Oracle, shipped_oracles
from traces.download import sha256_of

SOURCE_MODELS = ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B")
"""The source's models shipped (`<org>/<model>` folders; their HF ids)."""
LEFT_OUT_MODELS = {
    "mistralai/Mixtral-8x7B-v0.1": "no architecture shipped (so no oracle), and its expert layers need their own "
    "carry-over",
}
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
SMALL_TOKENS = 128
"""Rows below this many tokens are summarised apart."""
GPU = "h100"
ACT_BYTES = 2.0
"""Bytes of a bf16 activation element."""
SOURCE_COLUMNS = ("layer_name", "input", "kv_cache", "tp_size", "latency(ns)")


def table() -> Path:
    """The shipped per-layer latency table (ns per layer instance on one GPU)."""
    return Path(str(resources.files("oracle").joinpath("data", "llmservingsim_h100_layers.csv")))


def col(layer: str) -> str:
    """The shipped column of a layer's latency (ns)."""
    return f"{layer}_ns"


def sources(src_dir: str | Path) -> list[tuple[str, int, Path]]:
    """(model, tp, path of its layers.csv) of every source table shipped, under `src_dir`
    (`<org>/<model>/tp<k>/layers.csv`); FileNotFoundError when a model has none."""
    root = Path(src_dir)
    out = []
    for model in SOURCE_MODELS:
        folders = sorted(
            (int(m.group(1)), p)
            for p in (root / model).glob("tp*")
            if (m := re.fullmatch(r"tp(\d+)", p.name)) and (p / "layers.csv").is_file()
        )
        if not folders:
            raise FileNotFoundError(f"no {model}/tp<k>/layers.csv under {root}")
        out += [(model, tp, p / "layers.csv") for tp, p in folders]
    return out


def build(src_dir: str | Path) -> pd.DataFrame:
    """The shipped table from LLMServingSim's `perf_models/H100` tree (`src_dir`): per model, tp
    and tokens in `TOKENS`, the latency (ns) of one instance of each layer on one GPU, unchanged.
    ValueError when a source table is not what is expected."""
    frames = []
    for model, tp, path in sources(src_dir):
        df = pd.read_csv(path)
        missing = [c for c in SOURCE_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)}")
        if set(df["tp_size"]) != {tp} or set(df["kv_cache"]) != {0}:
            raise ValueError(f"{path}: expected tp_size {tp} and kv_cache 0 throughout")
        if set(df["layer_name"]) != set(LAYERS):
            raise ValueError(f"{path}: layers {sorted(set(df['layer_name']))}, expected {sorted(LAYERS)}")
        if df.duplicated(["layer_name", "input"]).any():
            raise ValueError(f"{path}: a layer is timed twice at the same tokens")
        wide = df.pivot(index="input", columns="layer_name", values="latency(ns)")
        absent = sorted(set(TOKENS) - set(wide.index))
        if absent or wide.loc[list(TOKENS)].isna().any().any():
            raise ValueError(f"{path}: not every layer is timed at tokens {absent or list(TOKENS)}")
        part = wide.loc[list(TOKENS), list(LAYERS)].astype("int64")
        part.columns = [col(c) for c in LAYERS]
        frames.append(part.reset_index(drop=True).assign(model=model, tp=tp, tokens=list(TOKENS)))
    out = pd.concat(frames, ignore_index=True)
    return out[["model", "tp", "tokens", *(col(c) for c in LAYERS)]]


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


def compare() -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(rows compared, errors, notes: the rows left out and why, and the constants used) of the
    shipped table."""
    gpu = arch.load_gpu(GPU)
    k, _ = shipped_constants(gpu)
    frame = pd.read_csv(table())
    notes = [f"left out: {m}: {why}" for m, why in LEFT_OUT_MODELS.items()]
    names = set(shipped_oracles())
    kept = []
    for (model, tp), part in carried(frame, gpu).groupby(["model", "tp"], sort=False):
        spec = arch.find_model(str(model))
        assert spec is not None  # carried() found it
        name = Layout(int(tp)).oracle_name(spec, gpu)
        if name not in names:
            try:
                Layout(int(tp)).check(spec, gpu)
                why = f"no shipped oracle {name}"
            except LayoutError as e:
                why = f"no oracle: {e}"
            notes.append(f"left out: {model} TP {tp}: {why}")
            continue
        oracle = Oracle.load(name)
        work = feature_work(spec, Layout(int(tp)), gpu)
        x = np.stack([step_features(int(n)) for n in part["tokens"]])
        allreduce_ms = 1e3 * (x @ work.comm_s) * comm_scale(work, k)
        overhead_ms = 1e3 * (k.step_overhead_s + k.seq_overhead_s)
        engine_ms = part["kernel_ms"].to_numpy() + allreduce_ms + overhead_ms
        simulated_ms = 1e3 * oracle.step_time(x)
        kept.append(
            part.assign(
                oracle=name,
                allreduce_ms=allreduce_ms,
                overhead_ms=overhead_ms,
                engine_ms=engine_ms,
                simulated_ms=simulated_ms,
                error_pct=100 * (simulated_ms / engine_ms - 1),
            )
        )
    notes.append(
        f"H100 constants: step_overhead {1e3 * k.step_overhead_s:.3f} ms + seq_overhead {1e3 * k.seq_overhead_s:.3f} "
        f"ms a step (added); comm_scale {k.comm_scale:.3f} (TP rows: all-reduce from the simulator); "
        f"layer_overhead {1e3 * k.layer_overhead_s:.3f} ms a layer (not added: the measured kernels hold it)"
    )
    notes.append(
        "elementwise_ms is an estimate (fused norms, rope, SiLU-and-mul at datasheet bandwidth), not a measurement"
    )
    df = pd.concat(kept, ignore_index=True)
    cols = ["model", "tp", "tokens", "oracle", "measured_ms", "elementwise_ms", "kernel_ms", "allreduce_ms"]
    df = df[[*cols, "overhead_ms", "engine_ms", "simulated_ms", "error_pct"]]
    return df, errors(df), notes


def errors(df: pd.DataFrame) -> pd.DataFrame:
    """Mean absolute and mean signed error (%) per (model, tp) and over all rows, for steps of
    128-2,048 tokens and, apart, below 128."""
    small = df["tokens"] < SMALL_TOKENS
    label = df["model"].str.split("/").str[-1] + " TP " + df["tp"].astype(str)
    groups = []
    for rows, part in [("all", df), *((str(lab), df[label == lab]) for lab in label.drop_duplicates())]:
        for tokens, mask in ((f"{SMALL_TOKENS}-{max(TOKENS)}", ~small), (f"<{SMALL_TOKENS}", small)):
            e = part.loc[mask[part.index], "error_pct"]
            groups.append(
                {"rows": rows, "tokens": tokens, "n": len(e), "mae_pct": e.abs().mean(), "bias_pct": e.mean()}
            )
    return pd.DataFrame(groups)


def report(out: Path, *, rows: bool = True) -> Path:
    """Print the comparison (notes, each row if `rows`, the errors) and write it to
    OUT/layers.csv; that path."""
    from sim.validation.prefill import show

    df, err, notes = compare()
    return show(df, err, notes, out / "layers.csv", rows=rows)


def _fail(message: str) -> int:
    print(f"sim.validation.layers: error: {message}", file=sys.stderr)
    return 2


def _build_main(args: list[str]) -> int:
    src: Path | None = None
    out = table()
    for arg in args:
        key, sep, value = arg.partition("=")
        if key not in ("SRC", "out") or not sep or not value:
            return _fail(f"build takes SRC=DIR [out=FILE], got {arg!r}")
        if key == "SRC":
            src = Path(value)
        else:
            out = Path(value)
    if src is None:
        return _fail("build needs SRC=DIR (LLMServingSim's profiler/v0/perf_models/H100 folder)")
    if not src.is_dir():
        return _fail(f"SRC={src} is not a folder")
    try:
        used = sources(src)
        frame = build(src)
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    for _, _, path in used:
        print(f"read {path.relative_to(src)} (sha256 {sha256_of(path)})")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out, index=False)
    print(f"wrote {out} ({len(frame)} rows)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "build":
        return _build_main(args[1:])
    out = Path("validation")
    for arg in args:
        key, sep, value = arg.partition("=")
        if key != "out" or not sep or not value:
            return _fail(f"the arguments are out=DIR, or build SRC=DIR [out=FILE]; got {arg!r}")
        out = Path(value)
    report(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
