"""Build the shipped oracles: every model in `conf/model/` on every GPU in `conf/gpu/`.

    python -m oracle.build [--out DIR] [--report FILE]

Hardware constants are calibrated on the ML.ENERGY measurements replayed through the simulator's
vLLM engine (`oracle.hwcal`, features from `python -m sim.validation.calibrate`): H100 rows for
the Hopper GPUs (H100, H200: same GH100 compute die), B200 rows for the B200. No A100 or H200
measurement is shipped, so they take the H100 efficiencies with static power scaled by the ratio of
power limits and dynamic energies clamped to the power limit (assumptions recorded in each
oracle's provenance).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pandas as pd

from oracle import arch, hwcal
from oracle.derive import HardwareConstants, derive_oracle

CALIBRATED_ON = {"h100": "H100", "h200": "H100", "a100": "H100", "b200": "B200"}


def constants_for(gpu: arch.GpuSpec, calibrations: dict[str, hwcal.Calibration]) -> HardwareConstants:
    """Hardware constants for `gpu` from the calibration of its family."""
    label = CALIBRATED_ON.get(gpu.name)
    if label is None:
        raise KeyError(f"no calibration family for GPU {gpu.name!r}; add it to CALIBRATED_ON")
    k = calibrations[label].constants
    ref = arch.load_gpu(label.lower())
    if ref.name == gpu.name:
        return k
    scale = gpu.power_limit_w / ref.power_limit_w
    static = max(gpu.idle_power_w, k.static_power_w * scale)
    # Keep a compute-bound or bandwidth-bound step within the new GPU's power limit.
    head = max(gpu.power_limit_w - static, 0.0)
    e_flop = min(k.energy_per_flop_j, head * k.inv_eff_compute / gpu.peak_flops)
    e_byte = min(k.energy_per_byte_j, head * k.inv_eff_memory / gpu.memory_bandwidth)
    note = (
        f"transferred from {ref.name} calibration; static power scaled by power-limit ratio {scale:.3f}; "
        "energy per FLOP and per byte clamped so full-rate steps stay within the power limit"
    )
    return replace(
        k, static_power_w=static, energy_per_flop_j=e_flop, energy_per_byte_j=e_byte, source=f"{k.source}; {note}"
    )


def calibrate_all() -> dict[str, hwcal.Calibration]:
    """Calibrations per measured GPU label ('H100', 'B200')."""
    return {
        label: hwcal.calibrate(arch.load_gpu(label.lower()), label) for label in sorted(set(CALIBRATED_ON.values()))
    }


def build(out_dir: Path, calibrations: dict[str, hwcal.Calibration] | None = None) -> list[Path]:
    """Write one oracle JSON per (model, GPU) into out_dir; returns the paths."""
    cals = calibrations or calibrate_all()
    paths = []
    for g in arch.gpu_names():
        gpu = arch.load_gpu(g)
        k = constants_for(gpu, cals)
        for m in arch.model_names():
            o = derive_oracle(arch.load_model(m), gpu, k)
            o.provenance["calibration_prompt_tokens"] = cals[CALIBRATED_ON[g]].prompt_tokens
            o.provenance["calibration_prompt_sigma"] = cals[CALIBRATED_ON[g]].prompt_sigma
            problems = o.power_violations()
            throttled = [p for p in problems if "above the power limit" in p]
            if throttled:  # the simulator throttles such steps to the limit (sim.costs.StepCosts.capped)
                o.provenance["power_throttled"] = throttled
            if len(throttled) < len(problems):
                o.provenance["power_check"] = [p for p in problems if p not in throttled]
            paths.append(o.save(out_dir / f"{o.name}.json"))
    return paths


def report(calibrations: dict[str, hwcal.Calibration]) -> str:
    """Markdown report of the calibration: constants and per-model errors."""
    lines = ["# Hardware-constant calibration on ML.ENERGY v3 (LM Arena chat, vLLM)", ""]
    for label, cal in calibrations.items():
        k = cal.constants
        lines += [
            f"## {label}",
            "",
            f"Prompt lengths fitted by replaying the runs: lognormal, mean {cal.prompt_tokens:.0f} tokens, "
            f"σ {cal.prompt_sigma:.2f} (log space).  ",
            f"Achieved compute fraction 1/{k.inv_eff_compute:.3f}, memory-bandwidth fraction 1/{k.inv_eff_memory:.3f}, "
            f"step overhead {k.step_overhead_s * 1e3:.3f} ms, per-sequence overhead {k.seq_overhead_s * 1e6:.2f} µs, "
            f"static power {k.static_power_w:.0f} W, {k.energy_per_flop_j * 1e12:.3f} pJ/FLOP, "
            f"{k.energy_per_byte_j * 1e12:.2f} pJ/byte.",
            "",
            "Mean absolute error per model across batch caps (%):",
            "",
            _markdown(cal.per_model().round(2).reset_index()),
            "",
            "Each model left out of the fit, its errors with the other models' constants (%): how the constants "
            "carry to models nobody measured:",
            "",
            _markdown(cal.held_out.round(2).reset_index(names="model")) if cal.held_out is not None else "(none)",
            "",
            f"Dynamic-energy terms kept: per {cal.energy_basis}, the basis with the least mean held-out energy "
            "error per output token (%, each column a basis):",
            "",
            _markdown(cal.held_out_energy_by_basis.round(2).reset_index(names="model"))
            if cal.held_out_energy_by_basis is not None
            else "(none)",
            "",
            "Per batch cap:",
            "",
            _markdown(cal.rows.round(4)),
            "",
        ]
    return "\n".join(lines)


def _markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(map(str, row)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def main(argv: list[str] | None = None) -> None:
    default = Path(str(resources.files("oracle").joinpath("data", "oracles")))
    p = argparse.ArgumentParser(prog="python -m oracle.build", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=default, help="directory for the oracle JSON files")
    p.add_argument("--report", type=Path, default=default.parent / "calibration_report.md")
    args = p.parse_args(argv)
    cals = calibrate_all()
    paths = build(args.out, cals)
    args.report.write_text(report(cals))
    print(f"wrote {len(paths)} oracles to {args.out} and the calibration report to {args.report}")


if __name__ == "__main__":
    main()
