"""The comparison of replayed benchmark rows with their measurements: one line per row with its
layout and, per metric, the measured and simulated figures and the error (%), and mean errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pandas as pd

from oracle.model import Oracle
from oracle.screen import THROUGHPUT, TWIN, screen
from sim.validation.replay import replays
from sim.validation.row_setup import Prompts
from sim.validation.table import METRICS, BenchmarkRow, HistKey, Metrics, OutputHistogram

# Columns of `validate`'s table before the metrics: the run, its layout, its model's kind, the
# constants its oracle was derived with ('refined' on the run's configuration, or its GPU 'family's),
# why the calibration's screen leaves the run out ('' where it fits on it; `oracle.screen`), its cap,
# the requests it was sent (its output-length histogram's count: the prompts × their resends).
ID_COLUMNS = (
    "config_id",
    "model_id",
    "task",
    "gpu_model",
    "num_gpus",
    "expert_parallel",
    "data_parallel",
    "weight_precision",
    "kind",
    "constants",
    "screen",
    "max_num_seqs",
    "requests",
    "prompt_mean_tokens",
)
COLUMNS = (*ID_COLUMNS, *(f"{m}_{s}" for m in METRICS for s in ("measured", "simulated", "err_pct")))


def model_kind(row: BenchmarkRow, oracle: Oracle | None = None) -> str:
    """'dense', 'moe' or 'hybrid': from the row's architecture label where the table has one,
    else from the oracle (a mixture of experts records its expert reads)."""
    label = (row.architecture or "").lower()
    if "hybrid" in label or "mamba" in label:
        return "hybrid"
    if "moe" in label or "mixture" in label:
        return "moe"
    if "dense" in label:
        return "dense"
    return "moe" if oracle is not None and oracle.experts is not None else "dense"


def validate(
    rows: list[BenchmarkRow],
    histograms: Mapping[HistKey, OutputHistogram],
    prompts: Prompts = None,
    *,
    seed: int = 0,
    progress: bool = False,
    log: Callable[[str], None] = print,
    scheduler: str = "vllm",
    family: bool = False,
    prefix_caching: bool = True,
) -> pd.DataFrame:
    """`replays`, one line per replayed row with the `ID_COLUMNS`, then `m_measured,
    m_simulated, m_err_pct` per metric (`family`: every row with its GPU family's constants;
    `prefix_caching` false: no resent prompt hits the prefix cache)."""
    reasons = screened(rows)
    out = [
        comparison(
            row,
            r.metrics,
            kind=model_kind(row, oracle),
            prompt_mean_tokens=r.prompt_mean_tokens,
            constants=oracle_constants(oracle),
            screen_reason=reasons[id(row)],
            requests=histograms[row.hist_key].total,
        )
        for row, oracle, _, r in replays(
            rows,
            histograms,
            prompts,
            seed=seed,
            progress=progress,
            log=log,
            scheduler=scheduler,
            family=family,
            prefix_caching=prefix_caching,
        )
    ]
    return pd.DataFrame(out, columns=list(COLUMNS))


def screened(rows: list[BenchmarkRow]) -> dict[int, str]:
    """Per row (by `id`): why the calibration's screen leaves it out, or '' (`oracle.screen`, each
    row against its twins among `rows`)."""
    table = pd.DataFrame({c: [getattr(r, c) for r in rows] for c in (*TWIN, "gpu_model")})  # a row's fields
    table[THROUGHPUT] = [r.measured.throughput for r in rows]
    return dict(zip(map(id, rows), screen(table), strict=True))


def oracle_constants(oracle: Oracle) -> str:
    """'refined' for an oracle derived with constants refined on its configuration's measured runs
    (`oracle.refine`), else 'family' (its GPU family's, or measured on its own)."""
    return "refined" if oracle.refined else "family"


def comparison(
    row: BenchmarkRow,
    simulated: Metrics,
    *,
    kind: str | None = None,
    prompt_mean_tokens: float = float("nan"),
    constants: str = "family",
    screen_reason: str = "",
    requests: int | None = None,
) -> dict[str, object]:
    """One output line: the run's `ID_COLUMNS`, then measured, simulated and error (%) of every metric."""
    line: dict[str, object] = {
        "config_id": row.config_id,
        "model_id": row.model_id,
        "task": row.task,
        "gpu_model": row.gpu_model,
        "num_gpus": row.num_gpus,
        "expert_parallel": row.expert_parallel,
        "data_parallel": row.data_parallel,
        "weight_precision": row.weight_precision,
        "kind": model_kind(row) if kind is None else kind,
        "constants": constants,
        "screen": screen_reason,
        "max_num_seqs": row.max_num_seqs,
        "requests": requests,
        "prompt_mean_tokens": prompt_mean_tokens,
    }
    for m in METRICS:
        meas, sim = getattr(row.measured, m), getattr(simulated, m)
        line |= {f"{m}_measured": meas, f"{m}_simulated": sim, f"{m}_err_pct": (sim - meas) / meas * 100.0}
    return line


def mean_abs_error(df: pd.DataFrame, by: str | list[str] | None = None) -> pd.DataFrame:
    """Mean absolute error (%) per metric, over all rows or per value of column(s) `by`."""
    errs = df[[f"{m}_err_pct" for m in METRICS]].abs().set_axis(list(METRICS), axis=1)
    if by is None:
        return errs.mean().to_frame("all rows").T
    keys = [df[c] for c in ([by] if isinstance(by, str) else by)]
    return errs.groupby(keys).mean()
