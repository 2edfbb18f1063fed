"""Per-request records: the job table folded back onto the user's requests.

A user's request is its main job plus, if a policy summarised its prompt, the summarization job.
Latencies run from the user's arrival; energies (J) add both jobs' charges, and so do the
preemptions and the tokens they made prefill again, the prompt tokens found in the prefix cache
(`cached_tokens`) and the prefill energy that spared (`cache_saved_j`, J: what prefilling them
would have cost, already left out of `energy_j`); `prefill_energy_j` is the part of `energy_j`
that is the requests' own prefill terms (the jobs' energies are `sim.results.job_energy`).
Records are computed a range of rows at a time: in memory for a small run, or written to Parquet
one row group at a time (`RecordsWriter`: during the run, each row group as soon as all its rows
are final) and read back a column at a time (`RecordsFile`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim.engine.costs import StepCosts
from sim.engine.jobs import DONE, REJECT_REASONS, REJECTED, JobTable
from sim.results.job_energy import cache_saved_j, job_energy_j, prefill_energy_j
from tracking.files import temporary, write_error

_REASONS = [REJECT_REASONS[k] for k in sorted(REJECT_REASONS)]
RECORDS_FILES = ("requests.parquet", "requests_baseline.parquet")  # in a run's folder: the run's, the baseline's
CHUNK_ROWS = 1 << 14  # rows per Parquet row group of a streamed run (~6 MB of records at a time)


@dataclass(frozen=True)
class Requests:
    """What the records are computed from: the trace's arrivals (s) and lengths asked (tokens),
    the user requests whose prompts were summarised (`parents`, sorted), the served job table,
    each server's step costs and whether the engine charged steps exactly."""

    arrival_s: np.ndarray
    n_in: np.ndarray
    n_out: np.ndarray
    parents: np.ndarray
    jobs: JobTable
    costs: Sequence[StepCosts]
    exact: bool

    def records(self, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Rows start…stop−1 (user requests, trace order)."""
        return _records(self, start, self.arrival_s.size if stop is None else stop)

    def final(self, start: int, stop: int) -> bool:
        """Whether rows start…stop−1 are final: each user request's job, and its summarization
        job if it has one, rejected or done with its finish time stamped."""
        lo, hi = np.searchsorted(self.parents, [start, stop])
        return _final(self.jobs, slice(start, stop)) and _final(self.jobs, slice(self.n + lo, self.n + hi))

    @property
    def n(self) -> int:
        """User requests (rows)."""
        return self.arrival_s.size


def _final(jobs: JobTable, ids: slice) -> bool:
    """Whether jobs `ids` are all rejected or done and stamped (the engine marks a job done before
    the server stamps its finish time, and a span hand-over, which flushes, comes in between)."""
    status = jobs.status[ids]
    return bool(np.all((status == REJECTED) | ((status == DONE) & ~np.isnan(jobs.finish_s[ids]))))


class RecordsWriter:
    """Records streamed to a Parquet file while the run goes, in row groups of `chunk_rows`
    (default `CHUNK_ROWS`): `flush` writes each next row group whose rows are all final, `close`
    the rest. The file is opened (and its schema written) at once, so that a bad path fails
    before the run. It is written under a temporary name (tracking.files) and renamed to `path`
    by `close`; `abort` closes it valid with the row groups written so far and renames it to
    `partial(path)` (removed if it holds none), so that `path` never holds part of the records.
    A failed write (a full disk) raises a `WriteError` naming `path`."""

    def __init__(self, requests: Requests, path: Path, chunk_rows: int | None = None) -> None:
        self.requests, self.path, self._tmp = requests, path, temporary(path)
        self.chunk_rows = chunk_rows or CHUNK_ROWS
        self.written = 0  # rows written: the first row not yet final is at or after it
        try:
            self._writer = pq.ParquetWriter(self._tmp, _table(requests.records(0, 0)).schema)
        except OSError as e:
            raise write_error(path, e) from e

    def flush(self) -> None:
        """Write each next row group whose rows are all final (checked with numpy, a group at a time)."""
        n = self.requests.n
        while self.written < n:
            stop = min(self.written + self.chunk_rows, n)
            if not self.requests.final(self.written, stop):
                return
            self._write(stop)

    def close(self) -> RecordsFile:
        """Write the remaining rows (final or not: the run is over) and close the file."""
        n = self.requests.n
        if n == 0:
            self._write_table(_table(self.requests.records(0, 0)))
        while self.written < n:
            self._write(min(self.written + self.chunk_rows, n))
        try:
            self._writer.close()
            os.replace(self._tmp, self.path)
        except OSError as e:
            raise write_error(self.path, e) from e
        return RecordsFile(self.path, n)

    def abort(self) -> str:
        """Close the file with the row groups written so far, as `partial(path)`; what it holds, in words."""
        kept = partial(self.path)
        try:
            self._writer.close()
            if not self.written:
                self._tmp.unlink()
                return "no records were written before the run stopped"
            os.replace(self._tmp, kept)
        except Exception as error:  # the run's own error matters more: say so, do not mask it
            self._tmp.unlink(missing_ok=True)
            return f"the records file {kept} could not be kept ({error!r}); no records were kept"
        return (
            f"records of the first {self.written:,} of {self.requests.n:,} requests were kept in {kept} "
            "(the rows final before the run stopped, whole row groups); the rest were not written"
        )

    def _write(self, stop: int) -> None:
        self._write_table(_table(self.requests.records(self.written, stop)))
        self.written = stop

    def _write_table(self, table: pa.Table) -> None:
        try:
            self._writer.write_table(table)
        except OSError as e:
            raise write_error(self.path, e) from e


def partial(path: Path) -> Path:
    """Where the records of a run that stopped are kept: `requests.parquet` → `requests.partial.parquet`."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def _table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)


@dataclass(frozen=True)
class RecordsFile:
    """Per-request records written to Parquet: columns are read from the file when asked for."""

    path: Path
    rows: int

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, column: str) -> pd.Series:
        """One column, read from the file a row group at a time into one array (one thread: Arrow's
        allocator keeps what each reading thread frees)."""
        f = pq.ParquetFile(self.path)
        kind = f.schema_arrow.field(column).type
        if pa.types.is_dictionary(kind):  # reject_reason: 1-byte codes
            return pq.read_table(self.path, columns=[column], use_threads=False).column(0).to_pandas()
        out = np.empty(self.rows, dtype=kind.to_pandas_dtype())
        at = 0
        for batch in f.iter_batches(batch_size=CHUNK_ROWS, columns=[column], use_threads=False):
            values = batch.column(0).to_numpy(zero_copy_only=False)
            out[at : at + values.size] = values
            at += values.size
        return pd.Series(out, name=column, copy=False)

    def frame(self) -> pd.DataFrame:
        """All records, read from the file."""
        return pd.read_parquet(self.path)


def _records(r: Requests, start: int, stop: int) -> pd.DataFrame:
    n, rows = r.arrival_s.size, slice(start, stop)
    jobs = r.jobs
    lo, hi = np.searchsorted(r.parents, [start, stop])
    parents = r.parents[lo:hi] - start
    summaries = n + np.arange(lo, hi)
    ids = np.arange(start, stop)
    both = np.concatenate([ids, summaries])
    saved = cache_saved_j(jobs, r.costs, both)
    energy = job_energy_j(jobs, r.costs, r.exact, both, saved)
    served_in, served_out = jobs.lengths_of(rows)
    summary_energy = np.zeros(ids.size)
    summary_energy[parents] = energy[ids.size :]
    cached = jobs.cached_tokens[both]
    prefill = prefill_energy_j(jobs, r.costs, both, saved)
    preempted = jobs.preemptions.dense(both, np.int32)
    recomputed = jobs.extra_prefill_tokens.dense(both, np.int64)
    for column in (cached, saved, prefill, preempted, recomputed):  # a summary's are its request's
        column[parents] += column[ids.size :]
    summary_tokens = np.zeros(ids.size, dtype=np.int64)
    summary_tokens[parents] = jobs.lengths_of(summaries)[1]
    arrival_s, n_in, n_out = r.arrival_s[rows], r.n_in[rows].astype(np.int64), r.n_out[rows].astype(np.int64)
    first, finish = jobs.first_s[rows], jobs.finish_s[rows]
    start_s = jobs.admit_s[rows].copy()
    start_s[parents] = jobs.admit_s[summaries]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(served_out > 1, (finish - first) / (served_out - 1), np.nan)
    frame = pd.DataFrame(
        {
            "request_id": ids,
            "arrival_s": arrival_s,
            "n_in": n_in,
            "n_out": n_out,
            "n_in_served": served_in,
            "n_out_served": served_out,
            "summary_tokens": summary_tokens,
            "completed": jobs.status[rows] == DONE,
            "server": jobs.server[rows].astype(np.int32),
            "start_s": start_s,
            "first_token_s": first,
            "finish_s": finish,
            "wait_s": start_s - arrival_s,
            "ttft_s": first - arrival_s,
            "tpot_s": tpot,
            "e2e_s": finish - arrival_s,
            "energy_j": energy[: ids.size] + summary_energy,
            "summary_energy_j": summary_energy,
            "input_tokens_dropped": n_in - served_in,
            "output_tokens_cut": n_out - served_out,
            "preemptions": preempted[: ids.size],
            "recomputed_tokens": recomputed[: ids.size],
            "cached_tokens": cached[: ids.size],
            "cache_saved_j": saved[: ids.size],
            "prefill_energy_j": prefill[: ids.size],
            "reject_reason": pd.Categorical.from_codes(jobs.reason[rows], categories=_REASONS),
        }
    )
    frame["shaped"] = (frame["input_tokens_dropped"] > 0) | (frame["output_tokens_cut"] > 0)
    return frame
