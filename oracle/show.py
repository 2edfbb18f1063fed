"""Print what an oracle says: θ, an n_out* table, and the best and worst tokens per joule.

    python -m oracle.show ORACLE [--batch 1 8 64] [--plots DIR]

ORACLE is a JSON file or a shipped name (`python -m oracle.show --list` lists them).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from oracle.identify import batch_note
from oracle.model import KV_UTILIZATION, Oracle, shipped_oracles
from oracle.plots import GRID, efficiency_map, plot_efficiency_heatmap, plot_energy_per_token


def describe(oracle: Oracle, batches: tuple[int, ...] = (1, 8, 64)) -> str:
    """A text report of the oracle at each batch size."""
    gpus = f"{oracle.gpus} × " if oracle.gpus > 1 else ""
    lines = [f"oracle {oracle.name}: {oracle.model} on {gpus}{oracle.gpu} ({oracle.backend})"]
    if oracle.experts is not None:
        x = oracle.experts
        lines.append(
            f"mixture of experts: reading every routed expert once takes {x.time_s * 1e3:.3g} ms and "
            f"{x.energy_j:.3g} J; a step of n tokens reads 1 − {x.untouched:.4g}^n of them"
        )
    if oracle.fit:
        lines.append(
            f"fit: MAPE {oracle.fit.get('mape_pct', float('nan')):.2f} %, "
            f"CV MAPE {oracle.fit.get('cv_mape_pct', float('nan')):.2f} %"
        )
        power = oracle.fit.get("power_constraint")
        if power:
            state = "binding" if power["active"] else "not binding"
            lines.append(
                f"power constraint [{power['idle_power_w']:.0f} W, {power['power_limit_w'] or float('nan'):.0f} W]: "
                f"{state}, cost {power['cost_pct']:+.2f} MAPE points"
            )
    lines.append(
        f"idle power {oracle.idle_power_w:.0f} W; calibrated n_in {oracle.calibrated.n_in}, "
        f"n_out {oracle.calibrated.n_out}, batch {oracle.calibrated.batch}"
    )
    if oracle.fitted_batch is not None:
        lines.append(f"caveat: {batch_note(oracle.fitted_batch)}")
    if oracle.memory is not None:
        m = oracle.memory
        lines.append(
            f"memory: weights {m.weight_bytes / 1e9:.1f} GB of {m.gpu_memory_bytes / 1e9:.1f} GB; KV cache in "
            f"{KV_UTILIZATION:g} of it, {m.kv_bytes_per_token / 1e3:.4g} kB per token, less the sampler's "
            f"{m.sampler_bytes_per_seq / 1e6:.3g} MB per sequence of a full batch"
        )
    for b in batches:
        theta = oracle.theta(b)
        lines.append(f"\nbatch {b}: " + ", ".join(f"θ{i + 1}={t:.4g}" for i, t in enumerate(theta)) + " (J)")
        if oracle.memory is not None:
            lines.append(f"  KV cache {oracle.memory.kv_capacity_tokens(max_seqs=b):,} tokens with a full batch of {b}")
        stars = oracle.optimal_output(np.array(GRID), b)
        lines.append("  n_in   " + " ".join(f"{n:>7d}" for n in GRID))
        lines.append("  n_out* " + " ".join(f"{s:>7.0f}" for s in stars))
        eff = efficiency_map(oracle, b)
        (bi, bo), (wi, wo) = np.unravel_index(eff.argmax(), eff.shape), np.unravel_index(eff.argmin(), eff.shape)
        lines.append(
            f"  best {eff.max():.4g} tok/J at (n_in={GRID[bi]}, n_out={GRID[bo]}), "
            f"worst {eff.min():.4g} tok/J at (n_in={GRID[wi]}, n_out={GRID[wo]}): ratio {eff.max() / eff.min():.2f}x"
        )
    return "\n".join(lines)


def listing(names: list[str]) -> str:
    """One line per model and GPU: its oracle name, then the other layouts that ship ('_tp2', ...)."""
    groups: dict[str, list[str]] = {}
    for n in names:
        parts = n.split("_")
        groups.setdefault("_".join(parts[:2]), []).append("_" + parts[2] if len(parts) > 2 else "")
    lines = []
    for stem, layouts in groups.items():
        one = stem if "" in layouts else f"({stem}: does not fit one GPU)"
        more = [x for x in layouts if x]
        lines.append(one + (f"  also {', '.join(stem + x for x in more)}" if more else ""))
    return "\n".join(lines) + f"\n{len(names)} oracles: MODEL_GPU (one GPU), MODEL_GPU_tpN / _epN (N GPUs per replica)"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m oracle.show", description=__doc__.splitlines()[0])
    p.add_argument("oracle", nargs="?", help="oracle JSON path or shipped name")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64], help="batch sizes to report")
    p.add_argument("--plots", type=Path, help="directory to write the heatmap and energy-per-token plots")
    p.add_argument("--list", action="store_true", help="list the shipped oracles")
    args = p.parse_args(argv)
    if args.list or not args.oracle:
        print(listing(shipped_oracles()))
        return
    try:
        oracle = Oracle.load(args.oracle)
    except (FileNotFoundError, ValueError) as e:
        p.error(str(e))
    print(describe(oracle, tuple(args.batch)))
    if args.plots:
        for b in args.batch:
            print("wrote", plot_efficiency_heatmap(oracle, args.plots / f"{oracle.name}.b{b}.heatmap.png", b))
            print(
                "wrote", plot_energy_per_token(oracle, args.plots / f"{oracle.name}.b{b}.energy_per_token.png", batch=b)
            )


if __name__ == "__main__":
    main()
