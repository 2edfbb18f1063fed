"""Build the shipped oracles: every model of `oracle/data/models/` on every GPU of
`oracle/data/gpus/`, on every replica layout of 1, 2, 4 and 8 GPUs that can serve it (`LAYOUT_GPUS`;
tensor parallel for dense models, expert parallel for mixtures of experts; hybrids with Mamba
layers are not modelled and get none).

    python -m oracle.build [--out DIR] [--report FILE]

Hardware constants are calibrated on the ML.ENERGY measurements replayed through the simulator's
vLLM engine (`oracle.hwcal`, features from `python -m sim.validation.calibrate`): H100 rows for
the Hopper GPUs (H100, H200: same GH100 compute die), B200 rows for the B200. No A100 or H200
measurement is shipped, so they take the H100 efficiencies with static power scaled by the ratio of
power limits and dynamic energies clamped to the power limit (assumptions recorded in each
oracle's provenance). A configuration that was measured (a model on a replica layout of H100 or
B200, `oracle.refine.MIN_RUNS` runs or more) gets those constants refined on its own runs
(`oracle.refine`), its oracle shipped even where the layout is not one of `layouts_for`'s.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path

import pandas as pd

from oracle import arch, hwcal, kernels, refine
from oracle.derive import HardwareConstants, Layout, LayoutError, derive_oracle
from oracle.model import FAMILY_KEY, Oracle, shipped_oracles
from oracle.screen import screen

BAND_LEVEL = 0.9  # the level of the bands the calibration report checks
LAYOUT_GPUS = (1, 2, 4, 8)  # GPUs per replica shipped: one node of HGX boards


def layouts_for(model: arch.ModelSpec, gpu: arch.GpuSpec) -> list[Layout]:
    """The replica layouts of `LAYOUT_GPUS` GPUs that can serve `model` on `gpu` (expert parallel
    for a mixture of experts, as the ML.ENERGY runs served them)."""
    out = []
    for g in LAYOUT_GPUS:
        layout = Layout(g, expert_parallel=bool(model.experts) and g > 1)
        try:
            layout.check(model, gpu)
        except LayoutError:
            continue
        out.append(layout)
    return out


def measured_layouts(
    model: arch.ModelSpec, gpu: arch.GpuSpec, refined: Mapping[str, HardwareConstants]
) -> list[Layout]:
    """The layouts of `model` on `gpu` beside `layouts_for`'s that were measured and refined
    (`refined`, by oracle name): a mixture of experts served tensor parallel, as gpt-oss was."""
    usual = {layout.oracle_name(model, gpu) for layout in layouts_for(model, gpu)}
    out: dict[str, Layout] = {}
    for g in LAYOUT_GPUS:
        for ep in (False, True):
            layout = Layout(g, ep)
            name = layout.oracle_name(model, gpu)
            if name in refined and name not in usual:
                out.setdefault(name, layout)
    return list(out.values())


def shipped_constants(gpu: arch.GpuSpec) -> tuple[HardwareConstants, dict[str, float]]:
    """The hardware constants the shipped oracles of `gpu` were derived with, and the calibration's
    prompt lengths (provenance keys `calibration_prompt_tokens`, `calibration_prompt_sigma`)."""
    names = [n for n in shipped_oracles() if n.endswith(f"_{gpu.name}")]
    if not names:
        raise KeyError(f"no shipped oracle on {gpu.name!r} to take hardware constants from; run python -m oracle.build")
    o = Oracle.load(names[0])
    prompts = {k: v for k, v in o.provenance.items() if k.startswith("calibration_prompt")}
    return HardwareConstants(**o.provenance.get(FAMILY_KEY, o.provenance["constants"])), prompts


def oracle_for(
    model: str, gpu: str, gpus: int = 1, expert_parallel: bool | None = None, family: bool = False
) -> Oracle:
    """The oracle of `model` (name, HF id or a benchmark's model_id) on a replica of `gpus` `gpu`
    (a name or a label such as 'H100'): the shipped one if there is one, else derived now with the
    shipped hardware constants of that GPU. `expert_parallel` defaults to the model being a mixture
    of experts. `family`: derived with the GPU family's constants even where the shipped oracle is
    refined on its configuration's measured runs (`oracle.refine`): what a configuration nobody
    measured gets. KeyError for an unknown model or GPU, LayoutError for a layout that cannot serve it."""
    spec = arch.find_model(model)
    card = arch.find_gpu(gpu) or (arch.load_gpu(gpu.lower()) if gpu.lower() in arch.gpu_names() else None)
    if spec is None or card is None:
        what = f"model {model!r}" if spec is None else f"GPU {gpu!r}"
        raise KeyError(f"no architecture for {what} in oracle/data; known models: {', '.join(arch.model_names())}")
    ep = bool(spec.experts) and gpus > 1 if expert_parallel is None else expert_parallel
    layout = Layout(gpus, ep)
    name = layout.oracle_name(spec, card)
    if name in shipped_oracles():
        shipped = Oracle.load(name)
        if not (family and shipped.refined):
            return shipped
    k, prompts = shipped_constants(card)
    o = derive_oracle(spec, card, k, layout=layout)
    o.provenance.update(prompts)
    return o


def constants_for(gpu: arch.GpuSpec, calibrations: dict[str, hwcal.Calibration]) -> HardwareConstants:
    """Hardware constants for `gpu` from the calibration of its family."""
    label = arch.CALIBRATED_ON.get(gpu.name)
    if label is None:
        raise KeyError(f"no calibration family for GPU {gpu.name!r}; add it to arch.CALIBRATED_ON")
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
    """Calibrations per measured GPU label ('H100', 'B200'). The GPU of the measured prefill
    kernels (`oracle.kernels`, H100) is fitted with them; the others hold its prefill-attention
    fraction of peak (no prefill of theirs is measured on its own, and their serving runs leave it
    loose) and fit their prompt GEMMs' own: B200's come out near 1/2.4 of peak where H100's kernels
    give 1/1.35 (1/2.14, 2.28, 2.33, 2.36 over four rounds of calibrate → build, the replays' prefill
    steps moving with it), and B200's leave-one-model-out energy error per output token falls from
    14.6 to 14.1 % (the calibration reports of commits 8670360 and 3925d25; a trial
    fitting prefill attention too put it at 1/14 of peak and that error at 14.8 %)."""
    measured = kernels.GPU.upper()
    gpu = arch.load_gpu(kernels.GPU)
    out = {measured: hwcal.calibrate(gpu, measured, kernels=kernels.kernel_rows(gpu))}
    k = out[measured].constants
    held = {"inv_attn": k.attention}
    for label in sorted(set(arch.CALIBRATED_ON.values()) - {measured}):
        out[label] = hwcal.calibrate(arch.load_gpu(label.lower()), label, held=held)
    return {label: _refined(label, cal) for label, cal in sorted(out.items())}


def _refined(label: str, cal: hwcal.Calibration) -> hwcal.Calibration:
    """`cal` with its measured configurations refined on their own runs (`oracle.refine`)."""
    rows = hwcal.measured_rows(label, None, None)
    return replace(cal, refinement=refine.refine_all(rows, arch.load_gpu(label.lower()), cal.constants))


def build(out_dir: Path, calibrations: dict[str, hwcal.Calibration] | None = None) -> list[Path]:
    """Write one oracle JSON per (model, GPU) into out_dir; returns the paths."""
    cals = calibrations or calibrate_all()
    paths = []
    for g in arch.gpu_names():
        gpu = arch.load_gpu(g)
        k = constants_for(gpu, cals)
        cal = cals[arch.CALIBRATED_ON[g]]
        refined = {} if cal.refinement is None else cal.refinement.constants
        for m in arch.model_names():
            model = arch.load_model(m)
            for layout in layouts_for(model, gpu) + measured_layouts(model, gpu, refined):
                own = refined.get(layout.oracle_name(model, gpu))
                o = derive_oracle(model, gpu, k if own is None else own, layout=layout)
                if own is not None:
                    o.provenance[FAMILY_KEY] = k.as_dict()
                    o.backend = "derived (vLLM-calibrated constants, refined on this configuration's measured runs)"
                paths.append(_write(o, cal, out_dir))
    return paths


def _write(o: Oracle, cal: hwcal.Calibration, out_dir: Path) -> Path:
    """Record the calibration's prompts and the power check in `o`'s provenance; save it."""
    o.provenance["calibration_prompt_tokens"] = cal.prompt_tokens
    o.provenance["calibration_prompt_sigma"] = cal.prompt_sigma
    problems = o.power_violations()
    throttled = [p for p in problems if "above the power limit" in p]
    if throttled:  # the simulator throttles such steps to the limit (sim.engine.costs.StepCosts.capped)
        o.provenance["power_throttled"] = throttled
    if len(throttled) < len(problems):
        o.provenance["power_check"] = [p for p in problems if p not in throttled]
    return o.save(out_dir / f"{o.name}.json")


def _power_text(above_idle_w: float | None) -> str:
    """A power the fit gave a time of its own (W above idle), or 'as static power' where it gave none."""
    return "as static power" if above_idle_w is None else f"idle + {above_idle_w:.0f} W"


def report(calibrations: dict[str, hwcal.Calibration]) -> str:
    """Markdown report of the calibration: constants, per-model and held-out errors."""
    lines = ["# Hardware-constant calibration on ML.ENERGY v3 (every run of mlenergy_v3_llm.csv, vLLM)", ""]
    for label, cal in calibrations.items():
        k = cal.constants
        comm_power, fp8_power = _power_text(k.comm_power_w), _power_text(k.fp8_expert_power_w)
        mamba_power = _power_text(k.mamba_power_w)
        errors = cal.rows[["energy_per_token_err_pct", "time_per_token_err_pct", "itl_err_pct"]].abs().mean()
        lines += [
            f"## {label}",
            "",
            f"{len(cal.rows)} runs of {cal.rows['model'].nunique()} models. LM Arena prompts: lognormal, mean "
            f"{cal.prompt_tokens:.0f} tokens, σ {cal.prompt_sigma:.2f} (log space); GPQA and Sourcegraph FIM "
            "prompts from oracle/data/task_prompts.csv.  ",
            f"Achieved compute fraction 1/{k.inv_eff_compute:.3f}, memory-bandwidth fraction 1/{k.inv_eff_memory:.3f}, "
            f"step overhead {k.step_overhead_s * 1e3:.3f} ms, per-layer overhead {k.layer_overhead_s * 1e6:.1f} µs, "
            f"per-sequence overhead {k.seq_overhead_s * 1e6:.2f} µs, a hybrid's prefill "
            f"{k.mamba_prefill_s * 1e6:.0f} µs per Mamba layer and prefilling sequence, "
            f"all-reduces × {k.comm_scale:.3f} (tensor parallel) and × {k.ep_comm_scale or k.comm_scale:.3f} "
            "(expert parallel) of the measured NCCL times, "
            f"block-scaled fp8 experts' reads + {k.fp8_expert_read_scale:.3f} × their read time, static power "
            f"{k.static_power_w:.0f} W per GPU, while all-reducing {comm_power}, while dequantising "
            f"block-scaled fp8 experts {fp8_power}, while a hybrid's Mamba layers move states or scan {mamba_power}, "
            f"{k.energy_per_flop_j * 1e12:.3f} pJ/FLOP, {k.energy_per_byte_j * 1e12:.2f} pJ/byte.",
            "",
            f"Mean absolute error over the runs (%): energy per output token {errors.iloc[0]:.1f}, time per output "
            f"token {errors.iloc[1]:.1f}, median ITL {errors.iloc[2]:.1f}. Per model:",
            "",
            _markdown(cal.per_model().round(2).reset_index()),
            "",
            "Each model left out of the fit, its errors with the other models' constants (%): how the constants "
            "carry to models nobody measured:",
            "",
            _markdown(cal.held_out.round(2).reset_index(names="model")) if cal.held_out is not None else "(none)",
            "",
            f"Energy terms kept: {cal.energy_basis}, the basis with the least mean held-out energy error per "
            "output token (%, each column a basis):",
            "",
            _markdown(cal.held_out_energy_by_basis.round(2).reset_index(names="model"))
            if cal.held_out_energy_by_basis is not None
            else "(none)",
            "",
            *_screened(label),
            *_coverage(label, cal),
            *_refinements(label, cal),
            *_prefill(label, cal),
            "Per run:",
            "",
            _markdown(cal.rows.round(4)),
            "",
        ]
    return "\n".join(lines)


def _screened(label: str) -> list[str]:
    """The runs of GPU `label` that no fit here stands on (`oracle.screen`), grouped, with the caps."""
    table = hwcal.load_mlenergy()
    table = table.assign(reason=screen(table))
    out = table[(table["gpu_model"] == label) & (table["reason"] != "")]
    if out.empty:
        return []
    groups = out.groupby(["reason", "model", "task", "num_gpus"])["max_num_seqs"].apply(
        lambda caps: ", ".join(map(str, sorted(caps)))
    )
    return [
        f"Runs the calibration leaves out ({len(out)}; `oracle/screen.py` says why), in no fit above or below "
        "and in no held-out error, though `python -m sim.validate` replays them:",
        "",
        _markdown(groups.rename("batch caps").reset_index()),
        "",
    ]


def held_out_table(calibrations: dict[str, hwcal.Calibration]) -> pd.DataFrame:
    """Every calibration's per-run held-out ratios (`oracle.errors.COLUMNS`), for the bands."""
    from oracle.errors import COLUMNS, refined_label

    parts = [c.held_out_rows.assign(gpu=label) for label, c in calibrations.items() if c.held_out_rows is not None]
    parts += [
        c.refinement.held_out_rows.assign(gpu=refined_label(label))
        for label, c in calibrations.items()
        if c.refinement is not None and not c.refinement.held_out_rows.empty
    ]
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def _coverage(label: str, cal: hwcal.Calibration) -> list[str]:
    """The report's lines on the bands the held-out errors give (`oracle.errors.coverage`)."""
    from oracle.errors import HeldOutErrors, band_check

    if cal.held_out_rows is None:
        return []
    errors = HeldOutErrors(label, cal.held_out_rows.assign(gpu=label))
    check = band_check(errors, BAND_LEVEL)
    spanned, energy, time = check.spanned, check.energy_covered, check.time_covered
    (lo, hi), (tlo, thi) = check.energy_interval, check.time_interval
    return [
        f"Bands (`oracle.errors`, what `python -m sim` reports with `uncertainty.samples`): a {BAND_LEVEL:.0%} band "
        f"spans the central {spanned:.1%} of the {errors.models} models' held-out ratios ({BAND_LEVEL:.0%} × "
        f"(m+1)/m, the finite-sample correction for a model nobody measured), models weighted equally: measured "
        f"/ predicted energy per output token {lo:.2f}-{hi:.2f} and time per output token {tlo:.2f}-{thi:.2f}. "
        f"Each model left out in turn, {energy:.1%} of the runs' measured energy per token (time: {time:.1%}) lie "
        "inside the band drawn from the other models' errors (the target: at least 85 % for energy). Per model:",
        "",
        _markdown(check.per_model.round(3).reset_index(names="model")),
        "",
    ]


def _refinements(label: str, cal: hwcal.Calibration) -> list[str]:
    """The report's lines on the measured configurations refined on their own runs (`oracle.refine`)
    and the bands of their oracles."""
    from oracle.errors import HeldOutErrors, band_check, refined_label

    if cal.refinement is None or cal.refinement.checks.empty:
        return []
    checks = cal.refinement.checks
    name = refined_label(label)
    check = band_check(HeldOutErrors(name, cal.refinement.held_out_rows.assign(gpu=name)), BAND_LEVEL)
    (lo, hi), (tlo, thi) = check.energy_interval, check.time_interval
    runs = checks["runs"]

    def mean(column: str) -> float:
        return float((checks[column] * runs).sum() / runs.sum())

    return [
        f"Measured configurations (`oracle.refine`): the oracle of each of these {len(checks)} (a model on a replica "
        f"layout, with at least {refine.MIN_RUNS} runs) is derived with the constants above, its work, per-sequence "
        "overhead, per-step and per-layer overheads and all-reduces scaled and its energy terms "
        f"({refine.ENERGY_BASIS}) refitted on its own runs; every other "
        "oracle keeps the constants above. Mean absolute errors (%) of energy and time per output token with the "
        "constants above, refined, and refined without the run (each run left out in turn: how the refinement "
        "carries to a batch cap or task not measured on that configuration), weighted by runs: energy "
        f"{mean('family_energy_mae_pct'):.1f} / {mean('refined_energy_mae_pct'):.1f} / "
        f"{mean('held_out_energy_mae_pct'):.1f}, time {mean('family_time_mae_pct'):.1f} / "
        f"{mean('refined_time_mae_pct'):.1f} / {mean('held_out_time_mae_pct'):.1f}. Per configuration:",
        "",
        _markdown(checks.round(2)),
        "",
        f"A refined oracle's bands draw from those runs left out ('{name}' in held_out_errors.csv, configurations "
        f"equally likely): a {BAND_LEVEL:.0%} band spans measured / predicted energy per output token "
        f"{lo:.2f}-{hi:.2f} and time per output token {tlo:.2f}-{thi:.2f}. Each configuration left out in turn, "
        f"{check.energy_covered:.1%} of its runs' energy per token (time: {check.time_covered:.1%}) lie inside "
        "the band drawn from the other configurations' (the target: at least 85 % for energy).",
        "",
        *_transfer(cal.refinement.transfer),
    ]


def _transfer(t: pd.DataFrame) -> list[str]:
    """The report's lines on carrying a model's refinement to a layout of it left out (why it is not done)."""
    if t.empty:
        return []
    better = int((t["carried_energy_mae_pct"] < t["family_energy_mae_pct"]).sum())
    return [
        "Why a model's refinement is not carried to its layouts nobody measured: each configuration of a model "
        "measured on other layouts too, predicted by the model refined on those other layouts instead of by the "
        f"constants above (mean absolute errors, %). Energy per output token comes out better in {better} of "
        f"{len(t)}:",
        "",
        _markdown(t.round(2)),
        "",
    ]


def _prefill(label: str, cal: hwcal.Calibration) -> list[str]:
    """The report's lines on prefill steps: the measured kernels (`oracle.kernels`) fitted and
    with their model left out, and how their weight was chosen; or the fractions held."""
    k = cal.constants
    lines = [
        f"Prefill: prompt GEMMs at 1/{k.prefill:.3f} of peak FLOP/s, prefill attention at 1/{k.attention:.3f}; "
        "a step that prefills hides the shorter of its weights' read (dense weights and every routed expert) and "
        "its prompt GEMMs behind the longer (`oracle.model.Overlap`).",
        "",
    ]
    if cal.held:
        fixed = ", ".join(f"{name} {value:.3f}" for name, value in cal.held.items())
        return [
            *lines[:-1],
            f"Held, not fitted ({fixed}): no prefill of this GPU is measured on its own, so it "
            f"takes the {kernels.GPU.upper()} fit's fractions of peak.",
            "",
        ]
    if cal.kernels is None or cal.prefill_sensitivity is None:
        return lines
    rows = cal.kernels.assign(
        fitted_err=100 * (cal.kernels["fitted_ms"] / cal.kernels["kernel_ms"] - 1),
        held_err=100 * (cal.kernels["held_out_ms"] / cal.kernels["kernel_ms"] - 1),
    )
    per = []
    for (m, tp), part in rows.groupby(["model", "tp"], sort=False):
        big, small = part[part["tokens"] >= 128], part[part["tokens"] < 128]
        per.append(
            {
                "model": str(m).split("/")[-1],
                "tp": tp,
                "rows": len(big),
                "fitted_mae_pct": big["fitted_err"].abs().mean(),
                "fitted_bias_pct": big["fitted_err"].mean(),
                "held_out_mae_pct": big["held_err"].abs().mean(),
                "held_out_bias_pct": big["held_err"].mean(),
                "held_out_mae_pct_below_128": small["held_err"].abs().mean(),
            }
        )
    return [
        *lines,
        "Prefill and decode apart: the errors above are of serving runs whose time is mostly decode (the "
        "ML.ENERGY runs publish no time to first token). Prefill steps measured kernel by kernel "
        "(LLMServingSim's H100 layer latencies carried over to a fused engine, `oracle.kernels`: one prompt of "
        "N tokens a step, kernel time only, so the per-step and per-sequence overheads and the all-reduces are "
        "left out of their model) are fitted beside them. Their errors (%) at 128-2,048 tokens with these "
        "constants, and with each model left out of the fit (its kernel rows and its ML.ENERGY runs):",
        "",
        _markdown(pd.DataFrame(per).round(1)),
        "",
        f"A kernel row weighs {cal.kernel_weight:g} of one ML.ENERGY target (time per output token or median "
        "ITL) in the fit: of the weights tried, the one with the least sum of the two held-out time errors "
        "(`oracle.hwcal.kernel_weight`; 0: the runs alone, prompt GEMMs and attention at the other FLOPs' "
        "fraction). Per weight: the fitted constants, the kernels' mean absolute errors (%) fitted and held out, "
        "and the runs' held-out errors (%), all runs and the long-prompt Sourcegraph FIM runs (one model) alone:",
        "",
        _markdown(cal.prefill_sensitivity.round(3)),
        "",
    ]


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
    p.add_argument("--errors", type=Path, default=default.parent / "held_out_errors.csv")
    args = p.parse_args(argv)
    cals = calibrate_all()
    paths = build(args.out, cals)
    args.report.write_text(report(cals))
    errors = held_out_table(cals)
    errors.to_csv(args.errors, index=False, float_format="%.10g")
    print(
        f"wrote {len(paths)} oracles to {args.out}, the calibration report to {args.report} and "
        f"{len(errors)} held-out errors to {args.errors}"
    )


if __name__ == "__main__":
    main()
