"""The console's closing table (policy against baseline, laid out by rich as plain text) and, when a
policy barely changes the energy, one line that says why; for a sweep's job, the figures on one line."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.policies.base import Policy
from sim.results.summary import BANDED, SAME_RUN, Summary, unit
from tracking.text_table import text_table

ROWS = (
    ("energy", "energy_j", 1e-3, "k", "{:.1f}"),
    ("per output token", "energy_per_output_token_j", 1.0, "", "{:.4f}"),
    ("output tokens / J", "output_tokens_per_j", 1.0, "", "{:.3f}"),
    ("p99 TTFT", "ttft_s.p99", 1.0, "", "{:.3f}"),
    ("p99 TPOT", "tpot_s.p99", 1.0, "", "{:.4f}"),
    ("SLO attainment", "slo_attainment", 1.0, "", "{:.3f}"),
    ("completed", "completed", 1.0, "", "{:.0f}"),
)
"""(label, summary key, scale, unit prefix, format): the unit comes from the summary type."""
BARELY_PCT = 1.0
"""Energy savings below this (%) get an explanation."""


WIDTH = 14  # characters of a value (a sign included) above which it is shown with an exponent


def _fmt(fmt: str, value: float) -> str:
    """The value in its row's format; in 3 significant digits with an exponent when that would be
    WIDTH characters or more (a figure too long to read at a glance)."""
    if not math.isfinite(value):
        return "n/a"
    text = fmt.format(value)
    return text if len(text) < WIDTH else f"{value:.3g}"


def table(summary: Summary) -> str:
    """The policy's summary against its baseline (if any): an aligned table, then a line each for
    the quality cost, the prefix cache (when a run found prompt tokens cached), the savings, the
    fleet and the capacity search."""
    base = summary.baseline is not None
    bands = summary.bands or {}
    banded = {key: name for name, key in BANDED.items() if name in bands}
    level = f"{100 * bands['level']:g} % band" if bands else ""
    header = ["", summary.run.policy, *([level] if bands else []), *(["none", "change"] if base else [])]
    rows = []
    for label, key, scale, prefix, fmt in ROWS:
        u = unit(key)
        name = f"{label} ({prefix}{u})" if u not in ("requests", "share", "tokens/J") else label
        p = summary.value(key) * scale
        row = [name, _fmt(fmt, p)]
        if bands:
            band = bands[banded[key]] if key in banded else None
            row.append("" if band is None else f"{_fmt(fmt, band['low'] * scale)}-{_fmt(fmt, band['high'] * scale)}")
        if base:
            b = summary.value(f"baseline.{key}") * scale
            change = f"{100 * (p - b) / b:+.1f}%" if b and math.isfinite(b) else "n/a"
            change = change if len(change) < 10 else f"{100 * (p - b) / b:+.2g}%"
            row += [_fmt(fmt, b), change]
        rows.append(row)
    lines = [text_table(header, rows)]
    r = summary.run
    lines.append(
        f"quality cost: {r.quality_cost_pct:.2f}% of tokens ({r.input_tokens_dropped:,} input dropped, "
        f"{r.output_tokens_cut:,} output cut), {r.requests_shaped:,} of {r.requests:,} requests shaped"
    )
    cache = prefix_cache(summary)
    if cache:
        lines.append(cache)
    if summary.energy_savings_pct is not None:
        lines.append(f"energy savings vs none: {summary.energy_savings_pct:.2f}% ({summary.baseline_source})")
        if summary.comparison_note:
            both = f"{summary.compared_requests:,} requests both served"
            lines[-1] += f", on the step energy of the {both}; {summary.comparison_note}"
        saving = bands.get("energy_savings_pct")
        if saving:
            verdict = "significant" if saving["significant"] else "not significant: the band includes 0"
            lines[-1] += f"; {level} {saving['low']:.2f} to {saving['high']:.2f}%, {verdict}"
    if summary.arrivals_note:
        lines.append(summary.arrivals_note)
    fleet = summary.fleet
    if fleet:
        pools = ", ".join(f"{p['replicas']} × {name} ({p['oracle'] or name})" for name, p in fleet["pools"].items())
        lines.append(f"fleet: {pools}; {_gpus(fleet.get('gpus'))}router {fleet['router']}")
    cap = summary.capacity
    if cap:
        verdict = "meet" if cap["met"] else "still miss"
        size = f"{cap['replicas']} replicas ({cap['gpus']} GPUs in the fleet)"
        if "capacity_replicas" in bands:
            r, g = bands["capacity_replicas"], bands["capacity_gpus"]
            size = (f"{cap['replicas']} replicas ({level} {r['low']:.0f}-{r['high']:.0f}; {cap['gpus']} GPUs in "
                    f"the fleet, band {g['low']:.0f}-{g['high']:.0f})")  # fmt: skip
        line = f"capacity: {size} of pool {cap['pool']!r} {verdict} {cap['target']}"
        if "baseline_replicas" in cap:
            line += f" (unshaped: {cap['baseline_replicas']})"
        lines.append(line)
    if bands:
        lines.append(_bands_line(bands))
    return "\n".join(lines)


def _bands_line(bands: dict) -> str:
    """What the bands are: their level, the replays, the share of them spanned and what each drew."""
    refined = bands.get("refined", False)
    held_out = (
        "the measured configurations' runs, each predicted by its configuration refined without it"
        if refined
        else "the calibration's held-out models"
    )
    what = {"calibration": f"the oracle's step time and energy scaled by an error drawn from {held_out}",
            "workload": "a bootstrap of the trace"}  # fmt: skip
    drawn = " and ".join(what[s] for s in bands["sources"].split("+"))
    level, spanned = 100 * bands["level"], 100 * bands["spanned"]
    beyond = ", for caps and tasks not measured" if refined else ", for models nobody measured"
    share = f"the central {spanned:.3g} % of them" + (beyond if spanned > level else "")
    return (f"bands: {level:g} % bands from {bands['samples']} replays ({share}), each with {drawn} "
            f"(bands.csv; uncertainty.samples=0 for none)")  # fmt: skip


def prefix_cache(summary: Summary) -> str | None:
    """'prefix cache: …': the share of prompt tokens found cached, how many, and the prefill energy
    that spared, of the policy's run and then the baseline's (unless it is the same run); None
    when neither found any."""
    runs = [summary.run]
    if summary.baseline is not None and summary.baseline_source != SAME_RUN:
        runs.append(summary.baseline)
    if not any(r.cached_tokens for r in runs):
        return None
    first, *rest = runs
    named = f"{first.policy} " if rest else ""
    line = (f"prefix cache: {named}{100 * first.prefix_hit_rate:.1f}% of prompt tokens found cached "
            f"({first.cached_tokens:,} tokens), {_joules(first.cache_saved_j)} of prefill spared")  # fmt: skip
    for r in rest:
        line += f"; {r.policy} {100 * r.prefix_hit_rate:.1f}% ({r.cached_tokens:,} tokens), {_joules(r.cache_saved_j)}"
    return line


def clock_line(summary: Summary) -> str | None:
    """'GPU clock: …': the SM clock averaged over busy time, of the run and of its baseline (unless
    the same run); None when unknown (a GPU without clock parameters)."""
    runs = [summary.run]
    if summary.baseline is not None and summary.baseline_source != SAME_RUN:
        runs.append(summary.baseline)
    if any(math.isnan(r.mean_clock_mhz) for r in runs):
        return None
    parts = [f"{r.policy} {r.mean_clock_mhz:.0f} MHz" if len(runs) > 1 else f"{r.mean_clock_mhz:.0f} MHz" for r in runs]
    return f"GPU clock: {'; '.join(parts)} on average over busy time (clock.png draws it over time when it moves)"


def _joules(value: float) -> str:
    """'677 J', '14.1 kJ', '4.5 MJ': three significant digits and an SI prefix."""
    text, prefix = f"{value:.3g}", ""
    for bigger in ("k", "M", "G", "T"):
        if abs(float(text)) < 1e3:
            break
        value /= 1e3
        text, prefix = f"{value:.3g}", bigger
    return f"{text} {prefix}J"


def _gpus(n: int | None) -> str:
    """'16 GPUs; ' (nothing when the summary predates GPU counts)."""
    return "" if n is None else f"{n} GPU{'s' if n != 1 else ''}; "


def brief(summary: Summary) -> str:
    """The table's main figures on one line: what a sweep's job prints (its table is in table.txt),
    so that the jobs' lines never interleave."""
    bands = summary.bands or {}
    parts = [f"energy {summary.value('energy_j') / 1e3:.4g} kJ"]
    if "energy_j" in bands:
        parts[-1] += f" (band {bands['energy_j']['low'] / 1e3:.4g}-{bands['energy_j']['high'] / 1e3:.4g})"
    if summary.energy_savings_pct is not None:
        parts.append(f"saved {summary.energy_savings_pct:.2f}%")
        if "energy_savings_pct" in bands and not bands["energy_savings_pct"]["significant"]:
            parts[-1] += " (not significant)"
    parts.append(f"quality cost {summary.run.quality_cost_pct:.2f}%")
    if summary.run.cached_tokens:
        parts.append(f"prefix hits {100 * summary.run.prefix_hit_rate:.1f}%")
    parts += [
        f"p99 TTFT {summary.value('ttft_s.p99'):.3g} s",
        f"p99 TPOT {summary.value('tpot_s.p99'):.3g} s",
        f"SLO attainment {summary.value('slo_attainment'):.3f}",
    ]
    return ", ".join(parts)


def explain(policy: Policy, requests: pd.DataFrame, summary: Summary) -> str | None:
    """Why a policy saved under BARELY_PCT % of the energy (None when it saved more, or has no baseline)."""
    saved = summary.energy_savings_pct
    if policy.name == "none" or saved is None or not math.isfinite(saved) or abs(saved) >= BARELY_PCT:
        return None
    n_in, n_out = requests["n_in"].to_numpy(), requests["n_out"].to_numpy()
    n = len(requests)
    caps = getattr(policy, "caps", None)
    if callable(caps):
        cap = caps(n_in)
        over = int((n_out > cap).sum())
        share = f"{over:,} of {n:,} outputs ({100 * over / max(n, 1):.1f}%)"
        return (
            f"why so little: the output caps (factor × n_out*) have median {np.median(cap):.0f} tokens, "
            f"and only {share} are longer; lower policy.factor to cut more"
        )
    limit = getattr(policy, "max_input_tokens", None)
    if limit is not None:
        over = int((n_in > limit).sum())
        return (f"why so little: only {over:,} of {n:,} prompts ({100 * over / max(n, 1):.1f}%) exceed "
                f"max_input_tokens={limit}")  # fmt: skip
    shaped = summary.run.requests_shaped
    return f"why so little: the policy changed only {shaped:,} of {n:,} requests ({100 * shaped / max(n, 1):.1f}%)"
