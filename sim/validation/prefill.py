"""Prefill time against measurement: the Splitwise prompt times replayed through the simulator.

    python -m sim.validation.prefill [out=DIR]

The ML.ENERGY runs that calibrate the hardware constants are decode-dominated and publish no time
to first token, so they pin prefill loosely. Splitwise (Patel et al., ISCA 2024;
oracle/data/splitwise_perf_model.csv) measured the prompt time of Llama-2-70B on H100s at tensor
parallel 2, 4 and 8: batch 1 at 128-8,192 prompt tokens, and batch 1-64 at 512. Each row is
replayed as its requests all arriving at an idle replica at once, prefilled in one step (no token
budget, no chunking), with the shipped `llama-3.1-70b_h100_tpN` oracle: Llama-3.1-70B has
Llama-2-70B's 80 layers, width, grouped-query attention and MLP, so its prefill FLOPs and bytes
are the same but for the vocabulary, whose logits a prefill computes for the last token only. The
simulated time to first token is compared with the measured median prompt time.

Rows left out, with the reason printed: BLOOM-176B (no architecture shipped), the A100 rows (no
A100 tensor-parallel Llama-70B calibration runs to check them against; the A100 oracles are
derived), the `h100-80gb-pcap` SKU (its prompt times are the uncapped ones +30 % and its token
times equal to them: derived, not measured), and TP 2 at batch 64 (361 ms, against 2,394 ms at
batch 32: it contradicts its neighbours).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from oracle.model import Oracle, OracleRangeWarning
from sim.config import ServerConfig
from sim.serving.run import simulate

MODEL, HARDWARE = "llama2-70b", "h100-80gb"
PROXY = "llama-3.1-70b_h100_tp{tp}"
"""The shipped oracle a row of tensor parallel `tp` is replayed with (Llama-2-70B's stand-in)."""
CONTRADICTED = ((2, 64, 512),)
"""(tensor parallel, batch, prompt tokens) of rows that contradict their neighbours."""


def table() -> Path:
    """The shipped Splitwise performance table."""
    return Path(str(resources.files("oracle").joinpath("data", "splitwise_perf_model.csv")))


def trusted(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The rows replayed (one per setting: the median prompt time of its repeats, ms) and why the
    others are left out."""
    why = []
    for model in sorted(set(frame["model"]) - {MODEL}):
        why.append(f"{model}: no architecture shipped")
    for hw in sorted(set(frame["hardware"]) - {HARDWARE}):
        reason = "derived (uncapped prompt times +30 %)" if hw.endswith("pcap") else "no multi-GPU calibration runs"
        why.append(f"{hw}: {reason}")
    keep = frame[(frame["model"] == MODEL) & (frame["hardware"] == HARDWARE)]
    settings = ["tensor_parallel", "batch_size", "prompt_size"]
    rows = keep.groupby(settings, as_index=False).agg(
        measured_ms=("prompt_time", "median"), repeats=("prompt_time", "size")
    )
    bad = pd.Series([tuple(map(int, k)) in CONTRADICTED for k in rows[settings].to_numpy()], index=rows.index)
    for tp, b, n in rows.loc[bad, settings].to_numpy():
        why.append(f"{MODEL} TP {tp}, batch {b}, prompt {n}: contradicts its neighbours")
    return rows[~bad].reset_index(drop=True), why


def replay(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` with the simulated prompt time (ms: the time to first token of the row's requests,
    all sent at once to an idle replica) and its error against the measured one (%)."""
    sim_ms = []
    oracles: dict[int, Oracle] = {}
    for tp, batch, prompt in rows[["tensor_parallel", "batch_size", "prompt_size"]].to_numpy():
        oracle = oracles.setdefault(int(tp), Oracle.load(PROXY.format(tp=int(tp))))
        requests = pd.DataFrame({"arrival_s": np.zeros(batch), "n_in": np.full(batch, prompt), "n_out": 2})
        server = ServerConfig(max_num_tokens=None, chunked_prefill=False, max_batch_size=int(batch))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OracleRangeWarning)  # n_out 2 is below the calibrated range on purpose
            ttft = simulate(requests, oracle, server).requests["ttft_s"]
        sim_ms.append(1e3 * float(ttft.max()))
    out = rows.assign(simulated_ms=sim_ms)
    return out.assign(error_pct=100 * (out["simulated_ms"] / out["measured_ms"] - 1))


def errors(df: pd.DataFrame) -> pd.DataFrame:
    """Mean absolute and mean signed error (%) per tensor-parallel degree and in all, batch-1 rows
    (prompt 128-8,192) and batched rows (prompt 512) apart."""
    kind = np.where(df["batch_size"] == 1, "batch 1", "batched")
    groups = []
    for label, part in [("all", df), *((f"TP {tp}", g) for tp, g in df.groupby("tensor_parallel"))]:
        for k in ("batch 1", "batched"):
            sub = part[kind[part.index] == k]
            e = sub["error_pct"]
            groups.append({"rows": label, "kind": k, "n": len(sub), "mae_pct": e.abs().mean(), "bias_pct": e.mean()})
    return pd.DataFrame(groups)


def compare() -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(rows replayed, errors, rows left out and why) of the shipped table."""
    rows, why = trusted(pd.read_csv(table()))
    df = replay(rows)
    return df, errors(df), why


def agreement(splitwise: pd.DataFrame, kernels: pd.DataFrame) -> pd.DataFrame:
    """The two measured sets on the same work: per tensor-parallel degree and prompt of the
    Splitwise batch-1 rows (`replay`'s output) that LLMServingSim's Llama-3.1-70B kernels also
    time (`sim.validation.layers.compare`'s rows, engine_ms: kernels, all-reduce and overhead),
    both times (ms) and their ratio. Llama-2-70B and Llama-3.1-70B share their layers' shapes."""
    one = splitwise[splitwise["batch_size"] == 1].rename(columns={"tensor_parallel": "tp", "prompt_size": "tokens"})
    seventy = kernels[kernels["model"].str.endswith("Llama-3.1-70B")][["tp", "tokens", "engine_ms"]]
    both = one[["tp", "tokens", "measured_ms"]].merge(seventy, on=["tp", "tokens"], how="inner")
    both = both.rename(columns={"measured_ms": "splitwise_ms", "engine_ms": "llmservingsim_ms"})
    return both.assign(ratio=both["splitwise_ms"] / both["llmservingsim_ms"])


def report(out: Path, *, rows: bool = True) -> pd.DataFrame:
    """Print the comparison (the rows left out and why, each row replayed if `rows`, the errors)
    and write it to OUT/prefill.csv; the rows replayed."""
    df, err, why = compare()
    show(df, err, [f"left out: {line}" for line in why], out / "prefill.csv", rows=rows)
    return df


def show(df: pd.DataFrame, err: pd.DataFrame, notes: list[str], path: Path, *, rows: bool = True) -> Path:
    """Print a prefill comparison (its notes, each row if `rows`, its errors) and write its rows
    to `path` (CSV); that path."""
    for line in notes:
        print(line)
    if rows:
        print(df.round(2).to_string(index=False))
    print(err.round(1).to_string(index=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False)
    print(f"wrote {path}")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out = Path("validation")
    for arg in args:
        key, sep, value = arg.partition("=")
        if key != "out" or not sep:
            print(f"sim.validation.prefill: error: the only argument is out=DIR, got {arg!r}", file=sys.stderr)
            return 2
        out = Path(value)
    report(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
