"""Which step coefficients a measurement table determines, and how a one-batch table is fitted.

The fit (`oracle.fit`) needs the summed step features of the table's runs to have full column
rank; a table that never varies what separates two features is refused (UnidentifiableFitError).

One batch size B (SweetSpot's batch-1 runs, HF-generate energy tables): a run of full batches of
B requests takes n_out steps per batch, and each step's shared cost (const) is paid once for B
sequences that each pay their decode or prefill cost, so summed over the run B·const =
decode_seqs + prefill_seqs. At one batch size the data fix the request-level polynomial but not
how the decode cost splits between the shared step and each sequence: moving t·B from
decode_seqs and prefill_seqs (t each) onto const changes no measured run, and no step of B
sequences. The fit solves with const = 0 (that family spans every non-negative solution), then
`merge_shared` puts as much of the merged cost on const as non-negativity allows, so decode_seqs or
prefill_seqs ends at 0.

Why the shared side: at small batches a decode step is bound by reading the weights, a cost the
batch shares; putting it all on each sequence would predict no gain from batching at all. Energy
and time at batch B are exact either way; at a batch b > B this choice gives the lowest energy per
request the measurements allow (all of the merged cost amortised over b), at b < B the highest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from oracle import features as F

FREE_COLUMNS = [i for i in range(F.N_FEATURES) if i != F.CONST]
"""Step features fitted on a one-batch table (const is merged into decode_seqs and prefill_seqs)."""

POINT_COLUMNS = ("n_in", "n_out", "batch_size", "num_requests")


class UnidentifiableFitError(ValueError):
    """A measurement table that cannot determine every step coefficient."""


def run_design(table: pd.DataFrame) -> np.ndarray:
    """Summed step features of every run in the table (rows, 6)."""
    return F.run_features(table["n_in"], table["n_out"], table["batch_size"], table["num_requests"])


def identifiable_columns(table: pd.DataFrame, rel_tol: float = 1e-8) -> tuple[list[int], float | None]:
    """The step features the table's runs determine, and the batch size B of a one-batch table.

    All six, with B None; or, for a table of full batches of one size B, all but const, which
    is merged into decode_seqs and prefill_seqs (`merge_shared`). Raises
    UnidentifiableFitError when even those are not determined: the design matrix (summed step
    features per run, columns scaled to unit norm) must have full column rank, since a singular
    value below rel_tol × the largest means some combination of features never varies
    independently, so the fit would pick arbitrary values for it (and MAPE can still read 0 %).
    """
    batch = fitted_batch(table)
    columns = list(range(F.N_FEATURES)) if batch is None else FREE_COLUMNS
    X = run_design(table)[:, columns]
    norm = np.linalg.norm(X, axis=0)
    _, sv, vt = np.linalg.svd(X / np.where(norm > 0, norm, 1.0), full_matrices=False)
    rank = int(np.sum(sv > rel_tol * sv[0])) if sv.size and sv[0] > 0 else 0
    if rank == len(columns):
        return columns, batch
    points = len(table[list(POINT_COLUMNS)].drop_duplicates())
    null = np.abs(vt[rank:])
    hits = (null > 1e-6 * null.max(axis=1, keepdims=True)).any(axis=0)
    involved = [F.FEATURES[c] for c, hit in zip(columns, hits, strict=True) if hit]
    varied = {c: int(table[c].nunique()) for c in ("n_in", "n_out", "batch_size")}
    merged = (
        ""
        if batch is None
        else f" (const merged into decode_seqs and prefill_seqs, as one batch size {batch:g} requires)"
    )
    need = (
        f"at least {F.N_FEATURES} distinct points with at least 2 values of n_in, of n_out (n_out > 1) and of "
        "batch_size, e.g. grid=sweetspot"
        if batch is None
        else f"at least {len(columns)} distinct points with at least 3 values of n_in and 2 of n_out (n_out > 1)"
    )
    raise UnidentifiableFitError(
        f"the table cannot determine the model: its {len(table)} row(s) hold {points} distinct "
        f"(n_in, n_out, batch_size, num_requests) point(s), which fix only {rank} of the {len(columns)} "
        f"step coefficients{merged} (it cannot tell apart the coefficients of {', '.join(involved)}). "
        "Distinct values: " + ", ".join(f"{c} {n}" for c, n in varied.items()) + f". A fit needs {need}."
    )


def fitted_batch(table: pd.DataFrame) -> float | None:
    """B when every run of the table is full batches of one size B (so B·const = decode_seqs +
    prefill_seqs in every run), else None. A run of num_requests < batch_size is one batch of
    num_requests; a remainder batch is another size."""
    cap = np.minimum(table["batch_size"].to_numpy(float), table["num_requests"].to_numpy(float))
    if cap.size == 0 or np.any(cap != cap[0]) or np.any(table["num_requests"].to_numpy(float) % cap[0]):
        return None
    return float(cap[0])


def merge_shared(free_coef: np.ndarray, batch: float) -> np.ndarray:
    """Six step coefficients from a fit over `FREE_COLUMNS` (const = 0) at batch size `batch`.

    t = min(decode_seqs, prefill_seqs) moves from each of them to const as t·batch: every run and
    every step of `batch` sequences keeps its cost, and all coefficients stay non-negative.
    """
    c = np.zeros(F.N_FEATURES)
    c[FREE_COLUMNS] = free_coef
    t = min(c[F.DECODE_SEQS], c[F.PREFILL_SEQS])
    c[F.CONST] += t * batch
    c[F.DECODE_SEQS] -= t
    c[F.PREFILL_SEQS] -= t
    return c


def batch_note(batch: float) -> str:
    """The caveat of an oracle fitted at one batch size (sequences), for reports and warnings."""
    return (
        f"fitted at batch {batch:g} only: batch scaling is undetermined, so predictions at other batch sizes "
        "extrapolate the split of the decode cost between the shared step and each sequence"
    )
