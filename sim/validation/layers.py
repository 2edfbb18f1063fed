"""Prefill step time against measured GPU kernels: LLMServingSim's H100 layer latencies, carried over.

    python -m sim.validation.layers [out=DIR]
    python -m sim.validation.layers build SRC=DIR [out=FILE]

The measured kernels of a prefill step, carried over to a fused engine as `oracle.kernels` says,
set against the shipped oracles' step time. The H100 constants are fitted on these rows beside the
ML.ENERGY runs (`oracle.hwcal`), so this comparison is in-sample; the calibration report
(`oracle/data/calibration_report.md`) gives each model's errors with it left out of the fit.

What the kernels do not hold is added from the simulator's own figures: for tp > 1 the step's
all-reduce time (`oracle.derive.feature_work`'s `comm_s`: 2 all-reduces a layer, each the
collective latency plus N·h·2 bytes·2(tp−1)/tp at the GPU's all-reduce bus bandwidth, times the
calibrated `comm_scale`), and the engine's overhead on top of kernels, the calibrated H100
`step_overhead_s` plus `seq_overhead_s` (the step's one sequence), from
`oracle.build.shipped_constants`. engine_ms = kernel_ms + allreduce_ms + overhead_ms is set
against the shipped oracle's step time for that step, `Oracle.step_time([1, 0, 0, 1, N,
N(N+1)/2])` (`oracle.features`; no power cap); error_pct = 100·(simulated/engine − 1). Errors are
summarised for 128-2,048 tokens and, apart, below 128.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from oracle import arch
from oracle.build import shipped_constants
from oracle.derive import Layout, comm_scale, feature_work
from oracle.kernels import GPU, LAYERS, TOKENS, col, kernel_rows, table
from oracle.model import Oracle, shipped_oracles
from traces.download import sha256_of

SOURCE_MODELS = ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B")
"""The source's models shipped (`<org>/<model>` folders; their HF ids)."""
LEFT_OUT_MODELS = {
    "mistralai/Mixtral-8x7B-v0.1": "no architecture shipped (so no oracle), and its expert layers need their own "
    "carry-over",
}
SMALL_TOKENS = 128
"""Rows below this many tokens are summarised apart."""
SOURCE_COLUMNS = ("layer_name", "input", "kv_cache", "tp_size", "latency(ns)")


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


def compare() -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(rows compared, errors, notes: the rows left out and why, and the constants used) of the
    shipped table."""
    gpu = arch.load_gpu(GPU)
    k, _ = shipped_constants(gpu)
    rows = kernel_rows(gpu)
    notes = [f"left out: {m}: {why}" for m, why in LEFT_OUT_MODELS.items()]
    notes += [f"left out: {m} TP {tp}: no oracle: {why}" for m, tp, why in rows.skipped]
    names = set(shipped_oracles())
    kept = []
    for (model, tp), part in rows.frame.groupby(["model", "tp"], sort=False):
        spec = arch.find_model(str(model))
        assert spec is not None  # kernel_rows() found it
        name = Layout(int(tp)).oracle_name(spec, gpu)
        if name not in names:
            notes.append(f"left out: {model} TP {tp}: no shipped oracle {name}")
            continue
        work = feature_work(spec, Layout(int(tp)), gpu)
        x = rows.features[part.index]
        allreduce_ms = 1e3 * (x @ work.comm_s) * comm_scale(work, k)
        overhead_ms = 1e3 * (k.step_overhead_s + k.seq_overhead_s)
        engine_ms = part["kernel_ms"].to_numpy() + allreduce_ms + overhead_ms
        simulated_ms = 1e3 * Oracle.load(name).step_time(x)
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
        "H100 constants (fitted on the ML.ENERGY runs and these rows): "
        f"step_overhead {1e3 * k.step_overhead_s:.3f} ms + seq_overhead {1e3 * k.seq_overhead_s:.3f} ms a step "
        f"(added); comm_scale {k.comm_scale:.3f} (TP rows: all-reduce from the simulator); "
        f"layer_overhead {1e3 * k.layer_overhead_s:.3f} ms a layer (not added: the measured kernels hold it); "
        f"prompt GEMMs at 1/{k.prefill:.2f} and prefill attention at 1/{k.attention:.2f} of peak FLOP/s, a "
        "prefill's weights' read overlapped with its prompt GEMMs"
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


def report(out: Path, *, rows: bool = True) -> pd.DataFrame:
    """Print the comparison (notes, each row if `rows`, the errors) and write it to
    OUT/layers.csv; the rows compared."""
    from sim.validation.prefill import show

    df, err, notes = compare()
    show(df, err, notes, out / "layers.csv", rows=rows)
    return df


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
