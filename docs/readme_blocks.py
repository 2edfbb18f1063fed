"""The README's generated blocks: each function runs the command(s) its section documents and
renders the block's Markdown (see docs/figures.py, which writes and checks them).

`python -m sim` runs go through `Commands.sim` in a subprocess (tracking, plots, background and the
progress bar off: none of them changes a figure), each distinct command once; the offline
estimate calls the functions `python -m sim.planning.offline` prints.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

QUIET = ("tracking.enabled=false", "plots=false", "background=false", "progress=false")
"""Overrides added to every documented `python -m sim` command: they change no figure."""
NO_BANDS = "uncertainty.samples=0"
"""Added to the commands whose blocks print no band: the replays change no point figure."""
ORACLE = "llama-3.1-8b_h100"
LOAD = "trace.rate_scale=20"
ROUTERS = ("round_robin", "least_tokens", "energy_aware")
SLO = (1.0, 0.1)
"""conf/sim.yaml's slo.ttft_s and slo.tpot_s (s), which these commands keep."""
CAPACITY = ("capacity.enabled=true", LOAD, "policy=adaptive_gen", "policy.factor=0.3")


class FigureError(Exception):
    """A block that cannot be generated (a command failed, a marker is missing): one line saying why."""


@dataclass
class Commands:
    """Runs the documented commands from the checkout `root`, each distinct one once, writing their
    folders under `scratch`."""

    scratch: Path
    root: Path
    _done: dict[tuple[str, ...], Any] = field(default_factory=dict)

    def _run(self, argv: tuple[str, ...]) -> Path:
        out = self.scratch / str(len(self._done))
        shown = " ".join(argv)
        proc = subprocess.run(
            [sys.executable, "-m", *argv, *self._extra(argv, out)], cwd=self.root, capture_output=True, text=True
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise FigureError(f"`python -m {shown}` failed (exit {proc.returncode}): {last}")
        return out

    @staticmethod
    def _extra(argv: tuple[str, ...], out: Path) -> tuple[str, ...]:
        if argv[0] == "sim":
            return (*QUIET, f"hydra.run.dir={out}")
        return (f"out={out}", "plot=false", "progress=false")

    def sim(self, *overrides: str, bands: bool = False) -> dict[str, Any]:
        """summary.json of `python -m sim OVERRIDES` (without its bands' replays unless `bands`)."""
        key = ("sim", *overrides, *(() if bands else (NO_BANDS,)))
        if key not in self._done:
            out = self._run(key)
            self._done[key] = json.loads((out / "summary.json").read_text())
        return dict(self._done[key])

    def validate(self, *args: str) -> pd.DataFrame:
        """validation.csv of `python -m sim.validate ARGS`."""
        key = ("sim.validate", *args)
        if key not in self._done:
            out = self._run(key)
            self._done[key] = pd.read_csv(out / "validation.csv")
        return pd.DataFrame(self._done[key])


def power_cap(c: Commands) -> str:
    """What `python -m sim trace=azure_chat gpu.power_limit_w=450` prints against the board's 700 W."""
    board, capped = c.sim("trace=azure_chat"), c.sim("trace=azure_chat", "gpu.power_limit_w=450")

    def change(key: str, stat: str | None = None) -> float:
        a, b = (x[key] if stat is None else x[key][stat] for x in (board, capped))
        return 100.0 * (b / a - 1.0)

    return f"""Capping the H100 from its board's 700 W to 450 W on azure_chat (`python -m sim trace=azure_chat
gpu.power_limit_w=450` against the same without the cap) changes the median TPOT by
{change("tpot_s", "p50"):+.1f} % and the energy by {change("energy_j"):+.1f} %, while the p99 TPOT, behind long
compute-bound prefills, changes by {change("tpot_s", "p99"):+.0f} %.
"""


def clock_controller(c: Commands) -> str:
    """What `python -m sim trace=azure_chat trace.rate_scale=1.25 gpu.clock_policy=slo` prints
    against the same at the maximum clock, and with other clock-switch latencies."""
    load = ("trace=azure_chat", "trace.rate_scale=1.25")
    static, controlled = c.sim(*load), c.sim(*load, "gpu.clock_policy=slo")
    free, slow = (c.sim(*load, "gpu.clock_policy=slo", f"gpu.clock_switch_s={s}") for s in (0, 0.1))

    def saving(run: dict) -> str:
        return f"{100.0 * (1.0 - run['energy_j'] / static['energy_j']):.1f} %"

    def tpot(run: dict) -> str:
        return f"{run['tpot_s']['p99'] * 1e3:.1f} ms"

    return f"""On azure_chat at 1.25× its rate (`python -m sim trace=azure_chat trace.rate_scale=1.25
gpu.clock_policy=slo`; about as much as one H100 server serves within the SLO at its maximum clock), the controller
uses {saving(controlled)} less energy than the maximum clock, with SLO attainment
{static["slo_attainment"]:.4f} → {controlled["slo_attainment"]:.4f} and p99 TPOT {tpot(static)} → {tpot(controlled)},
holding each clock it sets for the H100's 20 ms switch latency. Switching at every step
(`gpu.clock_switch_s=0`) it saves {saving(free)} (attainment {free["slo_attainment"]:.4f}, p99 TPOT
{tpot(free)}); a controller that may switch only every 100 ms (`gpu.clock_switch_s=0.1`) saves
{saving(slow)} but meets the SLO for {slow["slo_attainment"]:.4f} of requests (p99 TPOT {tpot(slow)}):
a clock set for a small batch is still held when the batch grows.
"""


def half_clock(c: Commands) -> str:
    """The locked-clock model's figures on the shipped H100 oracle (`oracle.clocks.at_clock`): a
    batch-64 decode step and an 8 × 1,024-token prefill step at half clock, and the clock of least
    energy per decode token."""
    from oracle import features as F
    from oracle.clocks import at_clock, clock_spec_of
    from oracle.model import Oracle

    oracle = Oracle.load(ORACLE)
    decode = F.step_features(decode_seqs=64, decode_ctx=64 * 1280)  # 64 sequences at 1,024 + 256 tokens
    prefill = F.step_features(prefill_seqs=8, prefill_tokens=8 * 1024, prefill_attn=8 * F.attn_pairs(1024))
    spec = clock_spec_of(oracle)
    half = at_clock(oracle, spec.max_mhz // 2)
    saving = 1 - float(half.step_energy(decode) / oracle.step_energy(decode))
    slowdown = float(half.step_time(decode) / oracle.step_time(decode)) - 1
    stretch = float(half.step_time(prefill) / oracle.step_time(prefill))
    per_token = [float(at_clock(oracle, int(f)).step_energy(decode)) for f in spec.supported_mhz]
    best = int(spec.supported_mhz[int(np.argmin(per_token))])
    return f"""On the shipped {ORACLE} oracle, a batch-64 decode step at {spec.max_mhz // 2} of {spec.max_mhz} MHz
costs {100 * saving:.1f} % less energy per token for {100 * slowdown:.1f} % more time (Maliakel et al., arXiv
2501.08219: −42 % for +1-6 %), an 8 × 1,024-token prefill step takes {stretch:.2f}× as long, and energy
per decode token is lowest at {best} MHz, inside the range.
"""


WINDOW_CASES = (
    ("azure_chat as shipped (one hour)", 1, 1.0, 2, 300.0),
    ("the same at 3× the rate", 1, 3.0, 2, 300.0),
    ("the same", 1, 3.0, 8, 300.0),
    ("the same, 60 s warm-up", 1, 3.0, 8, 60.0),
    ("at 4× the rate (one H100 overloaded)", 1, 4.0, 2, 300.0),
    ("a day: 24 copies, one an hour", 24, 1.0, 2, 300.0),
)
"""(row, copies of the hour, rate scale, windows, warm-up and cool-down s) of the windows' check."""


def windows_accuracy(c: Commands) -> str:
    """`sim.serving.windows.simulate_windows` (executor 'local', the code Ray runs) against one process, on
    one Llama-3.1-8B / H100 replica: merged minus one process, %, and the largest boundary drift
    (`sim.serving.windows.boundary_drift`: > 1 % is `simulate_windows`' warning that the warm-up is too short)."""
    import traces
    from oracle.model import Oracle, OracleRangeWarning
    from sim.config import ServerConfig, SloConfig
    from sim.policies.base import Policy
    from sim.results.metrics import summarize
    from sim.serving.fleet import Fleet
    from sim.serving.run import simulate_fleet
    from sim.serving.windows import boundary_drift, merge, plan_windows, simulate_window
    from traces.tile import tile

    hour, fleet, slo = traces.load("azure_chat"), Fleet.single(Oracle.load(ORACLE), ServerConfig()), SloConfig()

    def pct(new: float, old: float) -> str:
        return f"{100.0 * (new / old - 1.0):+.3f}"

    rows = []
    for label, copies, scale, windows, warmup in WINDOW_CASES:
        day = tile(hour, copies)
        requests = day.assign(arrival_s=day["arrival_s"] / scale)
        arrival = requests["arrival_s"].to_numpy(float)
        plan = plan_windows(arrival, windows, warmup, warmup)
        with warnings.catch_warnings():  # the trace's long requests: the README says so already
            warnings.simplefilter("ignore", OracleRangeWarning)
            one = simulate_fleet(requests, fleet)
            parts = [simulate_window(requests.iloc[w.first : w.last].reset_index(drop=True), fleet, Policy(), w)
                     for w in plan]  # fmt: skip
        merged = merge(parts, "none", float(arrival[-1]), 0.0)
        a, b = summarize(merged, slo), summarize(one, slo)
        lat = " | ".join(
            f"{pct(a[k]['p50'], b[k]['p50'])} / {pct(a[k]['p99'], b[k]['p99'])}" for k in ("ttft_s", "tpot_s", "e2e_s")
        )
        sums = pct(merged.requests["energy_j"].sum(), one.requests["energy_j"].sum())
        energy, drift = pct(a["energy_j"], b["energy_j"]), 100 * max(boundary_drift(parts))
        rows.append(
            f"| {label} | {len(requests):,} | {windows} | {warmup:.0f} s | {energy} | {sums} | {lat} | {drift:.1f} % |"
        )
    head = _table_head(("trace", "requests", "windows", "warm-up", "energy", "Σ request energy", "TTFT p50 / p99",
                        "TPOT p50 / p99", "e2e p50 / p99", "largest drift"))  # fmt: skip
    return (
        f"""Merged minus one process, % (one Llama-3.1-8B / H100 replica; `executor="local"`, the code the Ray
tasks run; the last column is the boundary drift that warns above 1 %):

{head}
"""
        + "\n".join(rows)
        + "\n"
    )


THRESHOLDS = {
    "adaptive_gen": ("factor", (2.0, 1.3, 0.95, 0.8, 0.4, 0.22, 0.19, 0.09)),
    "truncation": ("max_input_tokens", (8020, 6422, 4393, 3849, 3220, 830, 291)),
}
"""The thresholds of the tuning studies' grids (`conf/experiment/tune_*.yaml`'s ranges)."""


def threshold_fronts(c: Commands) -> str:
    """Energy saved and quality cost along each tuning study's threshold, on its workload (the
    first 3,000 requests of azure_chat), one `python -m sim` per point."""
    parts = []
    for policy, (key, values) in THRESHOLDS.items():
        runs = [(v, c.sim("trace.max_requests=3000", f"policy={policy}", f"policy.{key}={v}")) for v in values]
        rows = "\n".join(f"| {v:g} | {s['energy_savings_pct']:.3g} | {s['quality_cost_pct']:.3g} |" for v, s in runs)
        parts.append(f"{_table_head((f'{policy} `{key}`', 'energy saved (%)', 'quality cost (%)'))}\n{rows}")
    best = {
        p: c.sim("trace.max_requests=3000", f"policy={p}", f"policy.{k}={v[-1]}") for p, (k, v) in THRESHOLDS.items()
    }
    a, t = best["adaptive_gen"], best["truncation"]
    return (
        "\n\n".join(parts)
        + f"""

At this load (one H100, azure_chat's own rate) idle power dominates, so shaping saves little until
the caps bite hard: adaptive_gen saves {a["energy_savings_pct"]:.1f} % of the energy at a
{a["quality_cost_pct"]:.1f} % token cost with `factor={THRESHOLDS["adaptive_gen"][1][-1]:g}`; truncation
to {THRESHOLDS["truncation"][1][-1]} input tokens saves {t["energy_savings_pct"]:.1f} % but drops
{t["quality_cost_pct"]:.1f} % of the tokens.
"""
    )


SWEPT_MHZ = (495, 690, 990, 1290, 1590, 1980)
"""Locked SM clocks of the README's clock sweep (H100 clocks, `oracle/clock_specs.py`)."""


def clock_sweep(c: Commands) -> str:
    """What `python -m sim -m gpu.clock_mhz=...` and `python -m sim.report` find on azure_chat:
    energy per output token and TPOT by clock, and the sweet spots (`tracking.clock_sweep`)."""
    from tracking.clock_sweep import describe

    runs = {mhz: c.sim("trace=azure_chat", f"gpu.clock_mhz={mhz}") for mhz in SWEPT_MHZ}
    sweep = pd.DataFrame(
        [
            {"label": f"gpu.clock_mhz={mhz}", "clock_mhz": s["mean_clock_mhz"],
             "energy_per_output_token_j": s["energy_per_output_token_j"], "tpot_s.p50": s["tpot_s"]["p50"],
             "tpot_s.p99": s["tpot_s"]["p99"], "slo_attainment": s["slo_attainment"]}
            for mhz, s in runs.items()
        ]
    )  # fmt: skip
    rows = "\n".join(
        f"| {mhz} | {r.clock_mhz:.0f} | {1e3 * r.energy_per_output_token_j:.0f} | {1e3 * r['tpot_s.p50']:.1f} | "
        f"{1e3 * r['tpot_s.p99']:.1f} | {r.slo_attainment:.4f} |"
        for mhz, (_, r) in zip(SWEPT_MHZ, sweep.iterrows(), strict=True)
    )
    head = _table_head(("gpu.clock_mhz", "mean clock (MHz)", "mJ per output token", "median TPOT (ms)",
                        "p99 TPOT (ms)", "SLO attainment"))  # fmt: skip
    return f"""{head}
{rows}

On azure_chat at one H100's load (`trace=azure_chat`), {describe(sweep)}. Over a run at a given load
the idle power is paid either way, so energy per token falls with the clock until the GPU saturates.
"""


OLD_TABLE = "benchmark=oracle/data/mlenergy_v3_lm_arena_chat.csv"
"""The three one-GPU models the hardware constants were calibrated on (`sim.validation.calibrate`)."""


def validation(c: Commands) -> str:
    """The mean absolute errors of `python -m sim.validate` on the wide table by GPU × GPUs per
    replica × dense/MoE, then on the calibration rows: the worst H100 row, the hardest row, and
    the same rows under the former engine model (`scheduler=trtllm_no_evict`)."""
    from oracle.refine import MIN_RUNS
    from sim.validation.compare import mean_abs_error
    from sim.validation.table import METRICS

    wide, family = c.validate(), c.validate("constants=family")
    grouped = _grouped(wide)
    per_gpu = (
        pd.concat(
            [
                mean_abs_error(frame, "gpu_model").rename(index=lambda g, label=label: f"{g} {label}")
                for label, frame in (("shipped", wide), ("family", family))
            ]
        )
        .sort_index()
        .rename_axis(None)
    )
    per_gpu.insert(0, "rows", [int((wide["gpu_model"] == str(i).split()[0]).sum()) for i in per_gpu.index])
    per_gpu_text = per_gpu.to_string(float_format=lambda v: f"{v:.1f}")
    held = _held_out_energy()
    refined = int((wide["constants"] == "refined").sum())
    b200 = _b200_outliers(wide)
    uncached = c.validate("prefix_caching=false")
    short = {name: int((frame["batch_err_pct"] < -20.0).sum()) for name, frame in (("on", wide), ("off", uncached))}
    df, old = c.validate(OLD_TABLE), c.validate(OLD_TABLE, "scheduler=trtllm_no_evict")
    parts = [mean_abs_error(df), mean_abs_error(df, "gpu_model"), mean_abs_error(df, "model_id")]
    table = pd.concat(parts).rename(index=lambda i: str(i).split("/")[-1]).to_string(float_format=lambda v: f"{v:.1f}")
    h100 = df[df["gpu_model"] == "H100"]
    worst = h100[[f"{m}_err_pct" for m in METRICS]].abs().to_numpy().max()
    hard = h100.loc[(h100["batch_measured"] / h100["max_num_seqs"]).idxmin()]
    key = ["model_id", "gpu_model", "max_num_seqs"]
    was = old.merge(hard[key].to_frame().T.astype(old[key].dtypes.to_dict()), on=key).iloc[0]
    model = str(hard["model_id"]).split("/")[-1].removesuffix("-Instruct")
    return f"""`python -m sim.validate` on this checkout replays {len(wide)} of the wide table's runs and prints,
per GPU × GPUs per replica × dense/MoE/hybrid (mean absolute error, %):

```
{grouped}
```

{refined} of those rows belong to a measured configuration (a model on a replica layout, {MIN_RUNS} runs or
more) whose shipped oracle is refined on its own runs (`oracle.refine`): for them these figures are
a fit, and the calibration report, which refits each of them with each run left out, says how a
refined oracle carries to a batch cap or task not measured. `python -m sim.validate constants=family` replays
every row with its GPU family's constants, what a configuration nobody measured gets; per GPU,
shipped against family (mean absolute error, %):

```
{per_gpu_text}
```

With each model left out of the family fit in turn (`oracle/data/held_out_errors.csv`, what the
bands draw from), energy per output token is off by {held.loc["H100", "energy"]:.1f} % on H100 and
{held.loc["B200", "energy"]:.1f} % on B200, mean over models (issue #21's target: 7 %). Its two factors are off
by as much on their own: time per output token by {held.loc["H100", "time"]:.1f} and {held.loc["B200", "time"]:.1f} %,
power (energy over time) by {held.loc["H100", "power"]:.1f} and {held.loc["B200", "power"]:.1f} %, so
predicting either one exactly would still leave a model nobody measured above that target.

Where B200's throughput error comes from: {b200}

{_scatter(wide)}

Replayed without the prefix cache (`python -m sim.validate prefix_caching=false`, the same oracles),
the mean batch error over all rows is {uncached["batch_err_pct"].abs().mean():.1f} % instead of
{wide["batch_err_pct"].abs().mean():.1f} %, and {short["off"]} rows run a batch more than 20 % below the
measured one instead of {short["on"]}: the copies of a prompt share their KV blocks, so more sequences fit.

`python -m sim.validate {OLD_TABLE}` replays the one-GPU LM Arena runs of the three models the
former calibration was fitted on (the constants now fit every run above):

```
{table}
```

On H100 no row of those is off by more than {worst:.1f} % on any of batch, throughput, energy per output
token, power and median ITL. The hardest row, {model} at cap {hard["max_num_seqs"]}, where KV memory and not
the cap holds the batch, runs a batch of {hard["batch_simulated"]:.0f} against {hard["batch_measured"]:.0f} measured
and a median ITL of {hard["itl_median_simulated"]:.1f} ms against {hard["itl_median_measured"]:.1f} ms.
`python -m sim.validate {OLD_TABLE} scheduler=trtllm_no_evict` replays the same rows with the engine
model this project had before (a request's n_in + n_out of KV reserved at admission): a batch of
{was["batch_simulated"]:.0f} and an ITL of {was["itl_median_simulated"]:.0f} ms there
({was["itl_median_err_pct"]:+.0f} %), {old["batch_err_pct"].abs().mean():.1f} % mean batch error over those rows
instead of {df["batch_err_pct"].abs().mean():.1f} %.
"""


def _grouped(wide: pd.DataFrame) -> str:
    """Mean absolute errors (%) of a validation table: all rows, then per GPUs per replica × GPU ×
    dense/MoE."""
    from sim.validation.compare import mean_abs_error

    wide = wide.assign(replica=wide["num_gpus"].astype(str) + "×" + wide["gpu_model"])
    groups = mean_abs_error(wide, ["replica", "kind"])
    groups.insert(0, "rows", wide.groupby(["replica", "kind"]).size())
    groups.index = [f"{r} {k}" for r, k in groups.index]
    every = mean_abs_error(wide)
    every.insert(0, "rows", len(wide))
    return pd.concat([every, groups]).to_string(float_format=lambda v: f"{v:.1f}")


def _held_out_energy() -> pd.DataFrame:
    """Per GPU family (rows 'H100', 'B200'), the mean over models of each model's mean absolute
    error (%) with the model left out of the family fit (the shipped held-out errors): of energy
    and time per output token, and of power (energy over time)."""
    from importlib import resources

    with resources.files("oracle").joinpath("data", "held_out_errors.csv").open() as f:
        rows = pd.read_csv(f)
    err = (
        pd.DataFrame(
            {
                "energy": (1.0 / rows["energy_ratio"] - 1.0).abs(),
                "time": (1.0 / rows["time_ratio"] - 1.0).abs(),
                "power": (rows["time_ratio"] / rows["energy_ratio"] - 1.0).abs(),
            }
        )
        * 100.0
    )
    per_model = err.groupby([rows["gpu"], rows["model"]]).mean()
    return per_model.groupby(level=0).mean().loc[["H100", "B200"]]


def _b200_outliers(wide: pd.DataFrame) -> str:
    """The B200 rows the calibration's screen leaves out (`oracle.screen`: slower than their H100
    twin, or data-parallel), and B200's throughput error with and without them."""
    from oracle.screen import DATA_PARALLEL, NOT_GPU_BOUND

    b200 = wide[wide["gpu_model"] == "B200"]
    reason = b200["screen"].fillna("")
    slower, dp, rest = b200[reason == NOT_GPU_BOUND], b200[reason == DATA_PARALLEL], b200[reason == ""]
    err = "throughput_err_pct"
    names = sorted({f"{str(m).split('/')[-1]} ({t})" for m, t in zip(slower["model_id"], slower["task"], strict=True)})
    return (
        f"of its {len(b200)} rows, the calibration's screen (`oracle/screen.py`) leaves {len(slower) + len(dp)} out "
        "of every fit. "
        f"{len(slower)} delivered fewer tokens per second than the same model, task, GPUs and cap on H100, a GPU "
        f"with less compute and less bandwidth ({', '.join(names)}), so the GPU was not what held them back; "
        f"there the simulated median ITL is {-slower['itl_median_err_pct'].mean():.0f} % shorter than measured on "
        f"average. {len(dp)} are the data-parallel Qwen3-Coder-480B-FP8 runs, a layout the simulator does not "
        "model (it replays them as tensor-parallel attention). Both stay in the tables above (`validation.csv` "
        f"says why in its `screen` column). B200's mean throughput error is {b200[err].abs().mean():.1f} % over "
        f"all of them, {rest[err].abs().mean():.1f} % over the {len(rest)} the calibration fits on "
        "(issue #21's target: 5 %)."
    )


def _scatter(wide: pd.DataFrame) -> str:
    """The measured runs' own scatter on each GPU, beside the simulator's error on the same runs
    (`sim.validation.scatter`), over the runs the calibration fits on."""
    from sim.validation.scatter import repeat_spread, scatter_against_error, scatter_by_phase

    kept = wide[wide["screen"].fillna("") == ""]
    own = scatter_against_error(kept, "gpu_model")
    phases = scatter_by_phase(kept, "gpu_model")
    twice = repeat_spread(wide)

    def phase(gpu: str, metric: str) -> str:
        return (
            f"{phases.loc[(gpu, 'across phases'), f'{metric} scatter']:.1f} % "
            f"({phases.loc[(gpu, 'same phase'), f'{metric} scatter']:.1f} % within a phase)"
        )

    def figures(gpu: str, what: str) -> str:
        return " / ".join(
            f"{own.loc[gpu, f'{m} {what}']:.1f}" for m in ("throughput", "energy_per_token", "itl_median")
        )

    return (
        "The measurements scatter too. `python -m sim.validate` sets each run against the line through the runs "
        "at the caps beside it in its sweep (log-log, scaled to one run's noise: `sim.validation.scatter`); on "
        "the runs the calibration fits on that have a cap on each side, throughput / energy per output token / "
        f"median ITL lie {figures('B200', 'scatter')} % from it on average on B200 "
        f"({own.loc['B200', 'runs']:.0f} runs) "
        f"and {figures('H100', 'scatter')} % on H100 ({own.loc['H100', 'runs']:.0f} runs). A model smooth in the cap "
        "can get only a little below that on those runs, whatever it knows (the straight line's miss of the "
        f"curve's bend is in those figures too, at most H100's {own.loc['H100', 'throughput scatter']:.1f} % on "
        "throughput): B200's throughput scatter alone is "
        f"{'above' if own.loc['B200', 'throughput scatter'] > 5.0 else 'within'} issue #21's 5 % target. The "
        f"simulator's errors on the same runs: {figures('B200', 'error')} % on B200, {figures('H100', 'error')} % "
        "on H100. Where one of a run's neighbours belongs to another phase of the benchmark's sweep (its prompts "
        "resent another number of times, a separate sweep entry), the scatter grows: H100's power scatters by "
        f"{phase('H100', 'power')}, B200's throughput by {phase('B200', 'throughput')}. "
        f"Phases change at the larger caps, so part of that may come from the caps.{_repeats(twice)}"
    )


def _repeats(twice: pd.DataFrame) -> str:
    """A sentence on the caps of a sweep measured more than once (`repeat_spread`), if any."""
    if twice.empty:
        return ""

    def where(config_id: str, sent: str) -> str:
        model, _, gpu, gpus = config_id.split("|")[:4]
        cap, sent = config_id.rsplit("seqs", 1)[-1], sent.replace("/", " and then ")
        return f"{model.split('/')[-1]} on {gpus.removesuffix('gpu')} {gpu}s at cap {cap}, sent {sent} requests"

    def spread(column: str) -> str:
        return " and ".join(f"{v:.1f}" for v in twice[column])

    most = float(twice["power measured"].max())
    return (
        " Some caps were measured twice, the second time in another phase of the sweep "
        f"({'; '.join(map(where, twice['config_id'], twice['requests']))}): their power differs by "
        f"{spread('power measured')} %, at throughputs {spread('throughput measured')} % apart, where the "
        f"simulator, replaying each run's own requests and the prefix cache's hits on the resent prompts, puts "
        f"their power {spread('power simulated')} % apart. Between phases of one configuration, then, the power "
        f"level moved by up to {most:.1f} %, {'more' if most > 7.0 else 'less'} than the 7 % issue #21 allows "
        "the energy per output token of a model left out of the fit."
    )


def tensor_parallel(c: Commands) -> str:
    """Llama-3.1-8B at batch 1 on 1, 2 and 4 H100s, all three with the H100 family's constants
    (only the one-GPU layout was measured, and its shipped oracle is refined on those runs), against
    Fernandez et al. 2025's measured change."""
    from oracle.arch import load_gpu, load_model
    from oracle.build import oracle_for, shipped_constants

    n_in, n_out = 512, 256
    rows = []
    for gpus in (1, 2, 4):
        o = oracle_for("llama-3.1-8b", "h100", gpus, family=True)
        rows.append((o.gpus, float(o.time(n_in, n_out, 1)), float(o.energy(n_in, n_out, 1))))
    (_, t1, e1), *more = rows
    h100, llama = load_gpu("h100"), load_model("llama-3.1-8b")
    k = shipped_constants(h100)[0]
    overhead_ms = (k.step_overhead_s + llama.num_layers * k.layer_overhead_s) * 1e3
    assert h100.allreduce_latency_s is not None
    allreduce_us = h100.allreduce_latency_s * k.comm_scale * 1e6
    # Fernandez et al. 2025, "Energy Considerations of LLM Inference and Efficiency Optimizations"
    # (as issue #21 quotes it): Llama-3.1-8B at batch 1 on their GPUs, 1 → 2 → 4 GPUs, latency and energy (%)
    paper = {2: (-40, 29), 4: (-61, 55)}
    lines = [
        f"| {g} | {100 * (t / t1 - 1):+.0f} % | {100 * (e / e1 - 1):+.0f} % | {paper[g][0]:+d} % | {paper[g][1]:+d} % |"
        for g, t, e in more
    ]
    return f"""A request of {n_in} prompt and {n_out} output tokens at batch 1 (`Oracle.time`, `Oracle.energy` of
`llama-3.1-8b` on 1, 2 and 4 H100s with the H100 family's constants, `oracle_for(..., family=True)`:
only the one-GPU layout was measured, so the same constants serve all three) against one GPU:
{t1:.2f} s and {e1:.0f} J there.

| GPUs | latency (simulator) | energy (simulator) | latency (Fernandez et al.) | energy (Fernandez et al.) |
|---|---|---|---|---|
{chr(10).join(lines)}

The simulator's latency falls less and its energy rises more than theirs: each step keeps the
per-step and per-layer overheads the calibration on every ML.ENERGY run fitted ({overhead_ms:.2f} ms for
Llama-3.1-8B's {llama.num_layers} layers on H100, not shared between GPUs) and pays 2 × {llama.num_layers}
all-reduces ({allreduce_us:.1f} µs each at batch 1: the NCCL small-message floor times the fitted
scale), and every added GPU draws its static power over a step that shrank less. Their
measurements were not part of the calibration.
"""


def planning_example(c: Commands) -> str:
    """The planning figures of the default command (`python -m sim`: policy=none on azure_chat)."""
    s = c.sim()
    return f"""Example: the default command `python -m sim` (`policy=none`, `azure_chat` on `{ORACLE}`:
{s["energy_j"] / 1e6:.3f} MJ over {s["makespan_s"]:,.0f} s, peak {s["peak_power_w"]:.0f} W, one GPU) gives
{s["facility_power_avg_kw"]:.2f} kW average and {s["facility_power_peak_kw"]:.2f} kW peak facility power,
{s["annual_energy_mwh"]:.2f} MWh, {s["annual_co2e_t"]:.2f} t CO2 and {s["annual_cost"]:,.0f} {s["currency"]} a year.
"""


def router_table(c: Commands) -> str:
    """Each router at 6 replicas (the documented command) and at the size capacity search answers."""
    size = c.sim(*CAPACITY)["capacity"]["baseline_replicas"]
    rows = []
    for replicas in (6, size):
        for router in ROUTERS:
            s = c.sim(f"fleet.replicas={replicas}", f"fleet.router={router}", LOAD)
            rows.append(
                f"| {router} | {replicas} | {s['energy_j'] / 1e3:.1f} | {s['ttft_s']['p99']:.3f} "
                f"| {s['tpot_s']['p99']:.3f} | {s['slo_attainment']:.3f} | {s['gpu_utilization']:.2f} |"
            )
    return (
        "| router | replicas | energy (kJ) | p99 TTFT (s) | p99 TPOT (s) | SLO attainment | GPU utilisation |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def router_story(c: Commands) -> str:
    """Why 6 replicas no longer suffice, what capacity search answers, and what packing saves there."""
    import traces

    span = float(traces.load("azure_chat", rate_scale=20.0)["arrival_s"].max())
    six = [c.sim("fleet.replicas=6", f"fleet.router={r}", LOAD) for r in ROUTERS]
    cap = c.sim(*CAPACITY)
    size = cap["capacity"]["baseline_replicas"]
    at = {r: c.sim(f"fleet.replicas={size}", f"fleet.router={r}", LOAD) for r in ROUTERS}
    lt, ea = at["least_tokens"], at["energy_aware"]
    met = [r.replace("_", " ") for r in ROUTERS if _meets(at[r])]
    ttft, att = [s["ttft_s"]["p99"] for s in six], [s["slo_attainment"] for s in six]
    return f"""At 6 replicas this load is more than the fleet can serve, whatever the router: the queues grow for
the whole {span:.0f} s of arrivals (the last request finishes at {max(s["makespan_s"] for s in six):.0f} s), p99
TTFT reaches {min(ttft):.0f}–{max(ttft):.0f} s, and only {min(att):.2f}–{max(att):.2f} of the requests meet
the SLO (TTFT ≤ {SLO[0]:g} s, TPOT ≤ {SLO[1]:g} s). Capacity search on the same load
(`python -m sim {" ".join(CAPACITY)}`) answers {size} replicas for the unshaped trace and
{cap["capacity"]["replicas"]} with `adaptive_gen` at `factor=0.3`, which cuts {cap["quality_cost_pct"]:.2f} % of
the tokens and saves {cap["energy_savings_pct"]:.1f} % of the energy at that size. At {size} replicas
{" and ".join(met) or "no router"} meet{"s" if len(met) == 1 else ""} the p99 targets. The energy-aware router
packs requests onto fewer replicas (GPU utilisation {ea["gpu_utilization"]:.2f} against
{lt["gpu_utilization"]:.2f}) and uses {100 * (1 - ea["energy_j"] / lt["energy_j"]):.1f} % less energy than least
tokens, at the price of latency closer to the targets (p99 TTFT {ea["ttft_s"]["p99"]:.2f} s, SLO attainment
{ea["slo_attainment"]:.3f}): continuous batching keeps a replica busy whenever it has one sequence, so
spreading a load over many replicas pays every replica's per-step fixed cost.
"""


def band_coverage(c: Commands) -> str:
    """The shipped held-out errors' 90 % intervals and how often a left-out model lands inside."""
    from oracle.errors import HeldOutErrors, band_check, load_held_out

    shipped, rows = load_held_out(), []
    for gpu in sorted(set(shipped["gpu"]), reverse=True):
        errors = HeldOutErrors.of(gpu, shipped)
        check = band_check(errors, 0.9)
        (elo, ehi), (tlo, thi) = check.energy_interval, check.time_interval
        worst = ", ".join(check.per_model.sort_values("energy_covered").index[:2])
        rows.append(
            f"| {gpu} | {len(errors.rows)} of {errors.models} | {100 * check.spanned:.1f} % | {elo:.2f}–{ehi:.2f} | "
            f"{tlo:.2f}–{thi:.2f} | {100 * check.energy_covered:.1f} % | {100 * check.time_covered:.1f} % | "
            f"{worst} |"
        )
    head = ("calibration", "runs of models (refined: of configurations)", "a 90 % band spans",
            "energy per token, measured / predicted", "time per token", "runs inside, energy", "runs inside, time",
            "least covered")  # fmt: skip
    return f"""| {" | ".join(head)} |
|{"---|" * len(head)}
{chr(10).join(rows)}
"""


def planning_bands(c: Commands) -> str:
    """The 20× capacity answer with its bands, drawn from both unknowns and from each alone."""
    runs = {
        "both (the default)": c.sim(*CAPACITY, bands=True),
        "the calibration's errors only": c.sim(*CAPACITY, "uncertainty.sources=calibration", bands=True),
        "the trace's bootstrap only": c.sim(*CAPACITY, "uncertainty.sources=workload", bands=True),
    }

    def band(s: dict[str, Any], name: str, fmt: str, scale: float = 1.0) -> str:
        b = s["bands"][name]
        return f"{fmt.format(b['low'] * scale)}–{fmt.format(b['high'] * scale)}"

    rows = [
        f"| {what} | {band(s, 'capacity_replicas', '{:.0f}')} | {band(s, 'energy_j', '{:.0f}', 1e-3)} | "
        f"{band(s, 'ttft_p99_s', '{:.2f}')} | {band(s, 'energy_savings_pct', '{:.1f}')} |"
        for what, s in runs.items()
    ]
    both, cal, work = runs.values()
    b = both["bands"]

    def width(s: dict[str, Any]) -> float:
        e = s["bands"]["energy_j"]
        return (e["high"] - e["low"]) / s["energy_j"]

    wider = "the calibration" if width(cal) > width(work) else "the workload"
    measured = cal["bands"]["refined"]  # the run's oracle is refined on its configuration's measured runs
    if wider == "the workload":
        narrow = "a longer trace (more hours of this traffic); a measurement of the model would not"
    elif measured:
        narrow = (
            "a measurement at this load (its throughput and energy per output token on this traffic: a `python -m "
            "calibrate.measure` run fitted with `calibrate.fit`): the oracle is already refined on this model's "
            "ML.ENERGY runs, and its band is how that refinement carries to caps and tasks it was not measured at; "
            "a longer trace would not"
        )
    else:
        narrow = (
            "a measurement of this model on this GPU (its throughput and energy per output token at this load: a "
            "`python -m calibrate.measure` run fitted with `calibrate.fit`, or one ML.ENERGY row of it), which would "
            "replace the errors of models the calibration never saw by this model's own; a longer trace would not"
        )
    verdict = "significant: its band excludes zero"
    if not b["energy_savings_pct"]["significant"]:
        verdict = "not significant: its band includes zero"
    size, base = both["capacity"]["replicas"], both["capacity"]["baseline_replicas"]
    energy, saved = band(both, "energy_j", "{:.0f}", 1e-3), band(both, "energy_savings_pct", "{:.1f}")
    return f"""`python -m sim {" ".join(CAPACITY)}` answers {size} replicas (90 % band
{band(both, "capacity_replicas", "{:.0f}")} over {b["samples"]} replays) where the unshaped trace needs
{base}, at {both["energy_j"] / 1e3:.0f} kJ (band {energy} kJ); the policy's saving,
{both["energy_savings_pct"]:.1f} % (band {saved} %), is {verdict}.
Drawn one unknown at a time (`uncertainty.sources=calibration` or `workload`), 90 % bands:

| drawn | replicas | energy (kJ) | p99 TTFT (s) | energy saved (%) |
|---|---|---|---|---|
{chr(10).join(rows)}

{wider[0].upper() + wider[1:]} widens the energy band most ({100 * width(cal):.0f} % of the point estimate
from the calibration, {100 * width(work):.0f} % from the workload), so what would narrow this answer most is
{narrow}.
"""


def _meets(s: dict[str, Any]) -> bool:
    """Whether a run's p99 TTFT and TPOT are within the SLO."""
    return bool(s["ttft_s"]["p99"] <= SLO[0] and s["tpot_s"]["p99"] <= SLO[1])


def offline_table(c: Commands) -> str:
    """The two documented `python -m sim.planning.offline` commands, the ideal bound and the simulated run."""
    from sim.planning.offline import PAPER_OUT_TOKENS, WIDE_OUT_TOKENS, ideal_lower_bound, offline_estimate, specs_for

    requests, oracle = _azure_chat()
    paper = offline_estimate(requests, oracle, 256, out_tokens=PAPER_OUT_TOKENS)
    wide = offline_estimate(requests, oracle, 256, out_tokens=WIDE_OUT_TOKENS)
    gpu = specs_for(oracle)[1]
    bound = ideal_lower_bound(requests, *specs_for(oracle))
    sim = c.sim()

    def row(what: str, energy_j: float) -> str:
        per_token = energy_j / bound.output_tokens
        return f"| {what} | {energy_j / 1e6:.3f} MJ | {per_token:.3f} | {energy_j / bound.energy_j:.2f}× |"

    rows = [
        row(f"ideal bound ({bound.flops:.3g} FLOPs at {gpu.peak_flops / 1e12:.1f} TFLOP/s, {gpu.power_limit_w:.0f} W)",
            bound.energy_j),
        row(f"offline estimate, max batch 256 ({paper.clamped_in} inputs, {paper.clamped_out} outputs clamped)",
            paper.energy_j),
        row("offline estimate, max batch 256, O up to 4096", wide.energy_j),
        row("simulator, `policy=none`, continuous batching, max batch 256", sim["energy_j"]),
    ]  # fmt: skip
    tokens = f"{bound.output_tokens / 1e6:.2f} M output tokens"
    return f"""For `azure_chat` ({len(requests):,} requests, {tokens}) on `{ORACLE}`:

| method | energy | J / output token | vs. bound |
|---|---|---|---|
{chr(10).join(rows)}

(The paper found real vLLM energy 64 % above the ideal bound on BurstGPT. This oracle, calibrated on measured
vLLM serving, charges every step its static power and memory traffic, which the bound leaves out: the offline
estimate lies {paper.energy_j / bound.energy_j:.2f}× above the bound, the simulated run
{sim["energy_j"] / bound.energy_j:.2f}×.) Why they differ:
"""


def offline_reasons(c: Commands) -> str:
    """The figures behind each reason the offline estimate and the simulator differ."""
    import numpy as np

    from sim.planning.offline import bucket_table, offline_estimate

    requests, oracle = _azure_chat()
    sim = c.sim()
    small = {b: offline_estimate(requests, oracle, b).energy_j / 1e6 for b in (8, 16, 32)}
    paper = offline_estimate(requests, oracle, 256)
    n_in, n_out = requests["n_in"].to_numpy(), requests["n_out"].to_numpy()
    exact = float(bucket_table(n_in, n_out, oracle, 256, paper.kv_capacity_tokens)["energy_j"].sum())
    fixed = float(oracle.step_energy(np.array([1.0, 0, 0, 0, 0, 0])))
    concurrency = sim["e2e_s"]["mean"] * sim["completed"] / sim["makespan_s"]
    tokens = float((n_in + n_out).mean())
    return f"""- **Batch size comes from load, not from the GPU.** The offline estimate assumes every bucket is
  processed in full batches of up to 256. The real trace brings {sim["completed"] / sim["makespan_s"]:.1f}
  requests/s, so the simulated server runs ~{concurrency:.0f} requests at a time on average (mean concurrency
  Σ e2e / makespan = {concurrency:.1f}). Each step pays a fixed cost (reading the 16 GB of weights, static
  power: {fixed:.1f} J a step on this oracle) shared by the running sequences, so small batches cost far more per
  token. The offline estimate at max batch 8, 16 and 32 gives {small[8]:.2f}, {small[16]:.2f} and
  {small[32]:.2f} MJ: the simulator's {sim["energy_j"] / 1e6:.2f} MJ is what batches of about
  {concurrency:.0f} cost. This is most of the gap.
- **Arrivals, bursts and queueing.** Requests arrive over time and in bursts; the simulator batches what is
  there, mixes prefills with decodes of different lengths, and lets batches shrink as requests finish
  (partial batches), while the offline estimate runs identical requests in lockstep with no waiting.
- **Idle power.** The simulator charges idle power ({oracle.idle_power_w:.0f} W) whenever the GPU runs no
  step; the offline estimate and the bound have no idle time. Here that is small ({sim["idle_energy_j"]:,.0f}
  J: the GPU is almost always decoding something) but dominates at low load.
- **KV-capacity-limited batches.** The offline B(I, O) shrinks for long buckets when B·(I + O) exceeds the
  KV cache ({paper.kv_capacity_tokens:,} tokens on an H100 with Llama-3.1-8B); the simulated vLLM engine
  pages each request's KV as it grows, so long and short requests share the cache. At this load neither
  limit binds: {concurrency:.0f} requests of ~{tokens:,.0f} tokens use
  {100 * concurrency * tokens / paper.kv_capacity_tokens:.0f} % of the cache.
- **Bucket rounding.** Lengths move to powers of two (up to ×√2 either way, and clamped at the range ends).
  With exact lengths the offline estimate on `azure_chat` is {exact / 1e6:.3f} MJ instead of
  {paper.energy_j / 1e6:.3f} MJ ({100 * (paper.energy_j / exact - 1):+.1f} % from rounding); clamping outputs
  at 512 loses the tokens above it.
- **The bound ignores memory traffic and static power.** Decode is memory-bound: every step reads all
  weights and the KV cache, which costs energy the FLOP count does not see, and the GPU never reaches its
  peak FLOP/s at its TDP. The bound is a floor, not an estimate.
"""


def _azure_chat() -> tuple[pd.DataFrame, Any]:
    """The trace and oracle of `python -m sim.planning.offline --trace azure_chat --oracle llama-3.1-8b_h100`."""
    import traces
    from oracle.model import Oracle

    return traces.load("azure_chat"), Oracle.load(ORACLE)


def default_run(c: Commands) -> str:
    """What `python -m sim policy=POLICY trace=azure_chat` prints for each shipped policy."""
    none = c.sim("trace=azure_chat")
    adaptive, trunc, summ = (
        c.sim(f"policy={p}", "trace=azure_chat") for p in ("adaptive_gen", "truncation", "summarization")
    )
    return f"""On the Azure 2023 conversation trace ({none["requests"]:,} requests over an hour) with the
Llama-3.1-8B / H100 oracle and the `vllm` engine, the simulated server spends
{none["energy_per_output_token_j"]:.2f} J per output token (`python -m sim policy=POLICY trace=azure_chat`
prints these): `adaptive_gen` at its default `factor=1.0` saves {adaptive["energy_savings_pct"]:.2f} % (it shapes
{adaptive["requests_shaped"]:,} of {adaptive["requests"]:,} requests: its caps are longer than nearly every
output, and the console says so); truncation at its default cap saves {trunc["energy_savings_pct"]:.1f} % at a
quality cost of {trunc["quality_cost_pct"]:.0f} % of the tokens; summarization on a separate GPU changes the
energy by {-summ["energy_savings_pct"]:+.0f} %. Try `policy.factor=0.5`, heavier load
(`trace.rate_scale=8`), or a bigger batch.
"""


def prefill(c: Commands) -> str:
    """The prefill section of `python -m sim.validate` (`sim.validation.prefill.compare`,
    `sim.validation.layers.compare`) and the H100 calibration's held-out kernel errors."""
    from oracle import arch, hwcal, kernels
    from sim.validation import layers
    from sim.validation.prefill import agreement, compare

    df, err, _ = compare()
    kinds = {"batch 1": "1 (prompts of 128-8,192 tokens)", "batched": "2-64 (512-token prompts)"}
    rows = [
        f"| {r.rows} | {kinds[r.kind]} | {r.n} | {r.mae_pct:.1f} % | {r.bias_pct:+.1f} % |"
        for r in err.itertuples(index=False)
    ]
    worst = df.loc[df["error_pct"].abs().idxmax()]
    rows_l, err_l, _ = layers.compare()
    layer_rows = [
        f"| {r.rows} | {r.tokens} | {r.n} | {r.mae_pct:.1f} % | {r.bias_pct:+.1f} % |" for r in err_l.itertuples()
    ]
    both = agreement(df, rows_l)
    gpu = arch.load_gpu(kernels.GPU)
    cal = hwcal.calibrate(gpu, kernels.GPU.upper(), kernels=kernels.kernel_rows(gpu))
    assert cal.kernels is not None
    big = cal.kernels[cal.kernels["tokens"] >= 128]
    held = (100 * (big["held_out_ms"] / big["kernel_ms"] - 1)).abs().groupby([big["model"], big["tp"]]).mean()

    def held_out(model: str, tp: int) -> str:
        return f"{held.loc[(f'meta-llama/{model}', tp)]:.1f} %"

    k = cal.constants
    return f"""| rows | prompts at once | n | mean absolute error | mean error |
|---|---|---|---|---|
{chr(10).join(rows)}

The simulator prefills faster than Splitwise measured, and more so the more GPUs share the model
(the largest gap: TP {worst.tensor_parallel:.0f}, batch {worst.batch_size:.0f}, {worst.prompt_size:.0f}-token prompts,
{worst.simulated_ms:.0f} ms against {worst.measured_ms:.0f} ms). The two measured sets below disagree as much
on the same work: a 70B Llama prompt of 128-2,048 tokens at batch 1 on 2 or 4 H100s takes
{both["ratio"].min():.2f}-{both["ratio"].max():.2f}× as long in Splitwise's 2023 software stack as
LLMServingSim's kernels of vLLM's model code plus the simulator's all-reduce and overhead
(`python -m sim.validate` prints them side by side), so no one set of constants matches both. The
constants are fitted on the kernels, the code the ML.ENERGY runs served with; Splitwise bounds how
far the prefill of an older or different stack can differ.

A second set, kernel by kernel (`python -m sim.validation.layers`, also in `sim.validate`'s
prefill section): LLMServingSim's profiler timed every layer of vLLM's model code on one H100 at
1-2,048 tokens a step. Carried over to a fused engine (the GEMMs and attention as measured, the
logits of the last token only, the unfused norms, rotary embedding and activation replaced by
their bytes over the memory bandwidth, plus the simulator's all-reduce and per-sequence overhead;
`oracle.kernels`' docstring says why each), a step prefilling one sequence is simulated with
these errors:

| rows | tokens a step | n | mean absolute error | mean error |
|---|---|---|---|---|
{chr(10).join(layer_rows)}

A step that prefills reads its weights while it computes its prompt, so it costs the longer of
the two, not their sum (a roofline: `oracle.model.Overlap`), and the prompt's GEMMs run at their
own fraction of peak ({1 / k.prefill:.0%} on H100). The H100 constants are fitted on these kernels
beside the ML.ENERGY runs (a kernel row weighs {cal.kernel_weight:g} of a run's time target, the weight
with the least held-out error), so the table above is in-sample. With each model left out of the
fit, its kernels and its serving runs both, the mean absolute error at 128-2,048 tokens is
{held_out("Llama-3.1-8B", 1)} for Llama-3.1-8B on one GPU and {held_out("Llama-3.1-70B", 2)} for
Llama-3.1-70B on two (`oracle/data/calibration_report.md`, per model and per weight tried).
"""


MOONCAKE = ("trace=mooncake_conversation", "fleet.replicas=8")
"""The prefix-cache study: the Mooncake conversation hour on 8 Llama-3.1-8B / H100 replicas."""
MOONCAKE_POLICIES = (
    ("truncation to 16,384 tokens, `keep=suffix`", ("policy=truncation", "policy.max_input_tokens=16384")),
    (
        "truncation to 16,384 tokens, `keep=prefix`",
        ("policy=truncation", "policy.max_input_tokens=16384", "policy.keep=prefix"),
    ),
    ("summarization over 32,768 tokens", ("policy=summarization", "policy.min_input_tokens=32768")),
    ("adaptive_gen, `factor=0.5`", ("policy=adaptive_gen", "policy.factor=0.5")),
)


def prefix_cache(c: Commands) -> str:
    """The Mooncake conversation trace with and without the prefix cache: routers, an unbounded
    cache on one replica, and the policies with the cache on and off."""
    rows, found = [], {}
    for router, extra in (
        ("least_tokens", ("server.prefix_caching=false",)),
        ("least_tokens", ()),
        ("cache_aware", ()),
        ("cache_aware", ("fleet.cache_balance=0.25",)),
    ):
        s = c.sim(*MOONCAKE, f"fleet.router={router}", *extra)
        cache = "off" if extra and extra[0].endswith("false") else "on"
        found[router, extra] = s["prefix_hit_rate"]
        shown = f"`{router}`" + (" (`cache_balance=0.25`)" if "fleet.cache_balance=0.25" in extra else "")
        rows.append(
            f"| {shown} | {cache} | {s['energy_j'] / 1e6:.2f} | {100 * s['prefix_hit_rate']:.1f} % "
            f"| {s['cache_saved_j'] / 1e6:.2f} | {s['ttft_s']['p50']:.3f} | {s['ttft_s']['p99']:.2f} "
            f"| {s['slo_attainment']:.3f} |"
        )
    unbounded = c.sim("trace=mooncake_conversation", "trace.rate_scale=0.01", "server.kv_capacity_tokens=1000000000")
    on_off = {}
    for cache in ("true", "false"):
        for label, policy in MOONCAKE_POLICIES:
            setting = ("fleet.router=cache_aware", f"server.prefix_caching={cache}")
            on_off[label, cache] = c.sim(*MOONCAKE, *setting, *policy)
    policy_rows = []
    for label, _ in MOONCAKE_POLICIES:
        on, off = on_off[label, "true"], on_off[label, "false"]
        policy_rows.append(
            f"| {label} | {on['quality_cost_pct']:.1f} % "
            f"| {on['energy_j'] / 1e6:.2f} ({on['energy_savings_pct']:+.1f} %) "
            f"| {100 * on['prefix_hit_rate']:.1f} % | {off['energy_j'] / 1e6:.2f} ({off['energy_savings_pct']:+.1f} %) "
            f"| {on['slo_attainment']:.3f} / {off['slo_attainment']:.3f} |"
        )
    gain = found["cache_aware", ()] / found["least_tokens", ()]
    best_on = min(MOONCAKE_POLICIES, key=lambda p: on_off[p[0], "true"]["energy_j"])[0]
    best_off = min(MOONCAKE_POLICIES, key=lambda p: on_off[p[0], "false"]["energy_j"])[0]
    none_on, none_off = (on_off[MOONCAKE_POLICIES[0][0], x]["baseline"] for x in ("true", "false"))
    return f"""`python -m sim trace=mooncake_conversation fleet.replicas=8 fleet.router=ROUTER` (the hour of
{unbounded["requests"]:,} Kimi conversation requests on 8 Llama-3.1-8B / H100 replicas, 8 GPUs, each with a
KV cache of {_kv_tokens(c)} tokens; add `server.prefix_caching=false` for the rows without the cache):

{_table_head(ROUTER_COLUMNS)}
{chr(10).join(rows)}

An unbounded cache on one replica with the requests 100 times further apart, so that none overlaps
another (`python -m sim trace=mooncake_conversation trace.rate_scale=0.01
server.kv_capacity_tokens=1000000000`), finds {100 * unbounded["prefix_hit_rate"]:.1f} % of the prompt tokens cached:
the trace's own reuse of leading blocks. A GPU's KV memory holds a few dozen of these prompts, and a
conversation's next turn usually comes after many other requests, so a replica's cache finds a
small part of that (the reason Mooncake itself keeps KV in a pool of CPU memory and SSD across the
cluster); sending each request where its prefix is cached finds {gain:.1f} times as much as
`least_tokens`. Policies on the `cache_aware` fleet, each against `policy=none`
on the same fleet and cache setting ({none_on["energy_j"] / 1e6:.2f} MJ with the cache,
{none_off["energy_j"] / 1e6:.2f} MJ without; `python -m sim trace=mooncake_conversation fleet.replicas=8
fleet.router=cache_aware POLICY [server.prefix_caching=false]`):

{_table_head(POLICY_COLUMNS)}
{chr(10).join(policy_rows)}

The least energy: {best_on} with the cache; {best_off} without.
"""


ROUTER_COLUMNS = (
    "router", "prefix cache", "energy (MJ)", "prompt tokens found cached", "prefill spared (MJ)", "p50 TTFT (s)",
    "p99 TTFT (s)", "SLO attainment",
)  # fmt: skip
POLICY_COLUMNS = (
    "policy", "quality cost", "energy with the cache, MJ (saving)", "found cached",
    "energy without the cache, MJ (saving)", "SLO attainment (with / without)",
)  # fmt: skip


def _table_head(columns: tuple[str, ...]) -> str:
    """A Markdown table's header and rule."""
    return f"| {' | '.join(columns)} |\n|{'---|' * len(columns)}"


def _kv_tokens(c: Commands) -> str:
    """KV-cache tokens of one replica of the study (`ServerConfig()`'s defaults on its oracle)."""
    from oracle.model import Oracle
    from sim.config import ServerConfig
    from sim.engine.kv_sizing import replica_kv

    return f"{replica_kv(Oracle.load(ORACLE), ServerConfig()).capacity_tokens:,}"


BLOCKS: dict[str, Callable[[Commands], str]] = {
    "power_cap": power_cap,
    "clock_controller": clock_controller,
    "clock_sweep": clock_sweep,
    "half_clock": half_clock,
    "windows_accuracy": windows_accuracy,
    "threshold_fronts": threshold_fronts,
    "validation": validation,
    "planning_example": planning_example,
    "router_table": router_table,
    "router_story": router_story,
    "planning_bands": planning_bands,
    "band_coverage": band_coverage,
    "offline_table": offline_table,
    "offline_reasons": offline_reasons,
    "default_run": default_run,
    "tensor_parallel": tensor_parallel,
    "prefix_cache": prefix_cache,
    "prefill": prefill,
}
"""Every generated block, by the name its README markers carry, in README order."""
