"""The console's closing table: policy against baseline on energy, efficiency, latency, quality."""

from __future__ import annotations

import math
from typing import Any

ROWS = (
    ("energy (kJ)", lambda s: s["energy_j"] / 1e3, "{:.1f}"),
    ("J / output token", lambda s: s["energy_per_output_token_j"], "{:.4f}"),
    ("output tokens / J", lambda s: s["output_tokens_per_j"], "{:.3f}"),
    ("p99 TTFT (s)", lambda s: s["ttft_s"]["p99"], "{:.3f}"),
    ("p99 TPOT (s)", lambda s: s["tpot_s"]["p99"], "{:.4f}"),
    ("SLO attainment", lambda s: s["slo_attainment"], "{:.3f}"),
    ("completed", lambda s: s["completed"], "{:d}"),
)


def _fmt(fmt: str, value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return fmt.format(value)


def table(summary: dict[str, Any]) -> str:
    """A fixed-width table of the policy's summary against its `baseline` (if present)."""
    base = summary.get("baseline")
    head = f"{'':<20}{summary['policy']:>16}" + (f"{'none':>16}{'change':>10}" if base else "")
    lines = [head, "-" * len(head)]
    for label, get, fmt in ROWS:
        line = f"{label:<20}{_fmt(fmt, get(summary)):>16}"
        if base:
            b, p = get(base), get(summary)
            change = f"{100 * (p - b) / b:+.1f}%" if b else "n/a"
            line += f"{_fmt(fmt, b):>16}{change:>10}"
        lines.append(line)
    lines.append(
        f"quality cost: {summary['input_tokens_dropped']:,} input tokens dropped, "
        f"{summary['output_tokens_cut']:,} output tokens cut, "
        f"{summary['requests_shaped']:,} of {summary['requests']:,} requests shaped"
    )
    if base:
        lines.append(f"energy savings vs none: {summary['energy_savings_pct']:.2f}%")
    fleet = summary.get("fleet")
    if fleet:
        pools = ", ".join(f"{p['replicas']} × {name} ({p['oracle'] or name})" for name, p in fleet["pools"].items())
        lines.append(f"fleet: {pools}; router {fleet['router']}")
    cap = summary.get("capacity")
    if cap:
        verdict = "meet" if cap["met"] else "still miss"
        line = f"capacity: {cap['replicas']} replicas of pool {cap['pool']!r} {verdict} {cap['target']}"
        if "baseline_replicas" in cap:
            line += f" (unshaped: {cap['baseline_replicas']})"
        lines.append(line)
    return "\n".join(lines)
