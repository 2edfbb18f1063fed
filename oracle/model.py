"""The calibrated energy oracle: step-level time and energy coefficients for one (model, GPU, backend).

Step time (s) and energy (J) are linear in the step features of `oracle.features`. Summed over B
identical requests in lockstep they give the SweetSpot per-request polynomial, so one coefficient
set answers both "what does this serving step cost" (the simulator) and "what does a request of
(n_in, n_out) cost, and where is its sweet spot n_out*" (planning).
"""

from __future__ import annotations

import difflib
import json
import warnings
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from oracle import features as F
from oracle.clock_specs import ClockSpec
from oracle.files import NotARegularFileError, require_regular_file
from oracle.identify import batch_note

FORMAT = "sweetspot-oracle"
VERSION = 1
SHIPPED_DIR = "data/oracles"
MAX_ORACLE_BYTES = 16 << 20  # an oracle JSON is a few kB; a larger file is not one (and is not read whole)


class OracleFormatError(ValueError):
    """An oracle file that cannot be read: the message names the file and the problem."""


class OracleRangeWarning(UserWarning):
    """An oracle was asked about lengths or batches far outside the range it was calibrated on."""


@dataclass(frozen=True)
class CalibratedRange:
    """Inclusive ranges of the measurements behind the coefficients (tokens, sequences)."""

    n_in: tuple[float, float] = (64, 4096)
    n_out: tuple[float, float] = (64, 4096)
    batch: tuple[float, float] = (1, 256)

    def __post_init__(self) -> None:
        for label in ("n_in", "n_out", "batch"):
            lo, hi = getattr(self, label)
            if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
                raise ValueError(
                    f"calibrated.{label} must be [low, high] with 0 < low <= high, got [{lo:g}, {hi:g}]"
                    + (" (reversed: write the smaller value first)" if lo > hi > 0 else "")
                )


KV_UTILIZATION = 0.9
"""Share of GPU memory for weights, the sampler and KV cache when none is given (vLLM's default
`gpu-memory-utilization`)."""


@dataclass(frozen=True)
class MemorySpec:
    """What the simulator needs for KV-cache capacity (bytes).

    kv_bytes_per_token counts every layer. With sliding-window attention, `window_layers` of the
    `kv_layers` layers keep at most `window_tokens` tokens of KV (0: no such layers).
    seq_state_bytes: what every sequence holds whatever its length (a hybrid's Mamba state; 0: none).
    sampler_bytes_per_seq: the sampler's working memory per sequence of a full batch, over every GPU
    of the replica: an engine holds it back from the KV cache (vLLM measures it at start-up by
    sampling `max_num_seqs` dummy requests; 0: none).
    """

    weight_bytes: float
    kv_bytes_per_token: float
    gpu_memory_bytes: float
    kv_layers: int = 0
    window_layers: int = 0
    window_tokens: int = 0
    seq_state_bytes: float = 0.0
    sampler_bytes_per_seq: float = 0.0

    def __post_init__(self) -> None:
        for label, positive in (
            ("weight_bytes", False),
            ("kv_bytes_per_token", True),
            ("gpu_memory_bytes", True),
            ("seq_state_bytes", False),
            ("sampler_bytes_per_seq", False),
        ):
            v = getattr(self, label)
            if not (np.isfinite(v) and (v > 0 if positive else v >= 0)):
                need = "positive" if positive else "non-negative"
                raise ValueError(f"memory.{label} must be a finite {need} number of bytes, got {v:g}")
        for label in ("kv_layers", "window_layers", "window_tokens"):
            v = getattr(self, label)
            if not (np.isfinite(v) and v >= 0 and float(v).is_integer()):
                raise ValueError(f"memory.{label} must be a whole number ≥ 0, got {v!r}")
            object.__setattr__(self, label, int(v))
        if self.window_layers > self.kv_layers:
            raise ValueError(f"memory.window_layers ({self.window_layers}) exceeds memory.kv_layers ({self.kv_layers})")

    def kv_free_bytes(self, utilization: float = KV_UTILIZATION, max_seqs: int = 0) -> float:
        """Bytes left for the KV cache in `utilization` of GPU memory after the weights and the
        sampler's working memory for a batch of `max_seqs` sequences (can be negative)."""
        return self.gpu_memory_bytes * utilization - self.weight_bytes - max_seqs * self.sampler_bytes_per_seq

    def kv_capacity_tokens(self, utilization: float = KV_UTILIZATION, max_seqs: int = 0) -> int:
        """Tokens of KV cache that fit in `kv_free_bytes(utilization, max_seqs)`."""
        return max(int(self.kv_free_bytes(utilization, max_seqs) // self.kv_bytes_per_token), 0)


@dataclass(frozen=True)
class ExpertReads:
    """A mixture of experts' weight reads, which a step pays for the experts its tokens touch.

    time_s, energy_j: reading every routed expert of every MoE layer once (s, J; the replica's
    GPUs together); untouched: the chance that one token leaves a given expert untouched,
    1 − top_k / experts. A step of n tokens touches an expected 1 − untouched^n of them (uniform
    routing, each token picking top_k distinct experts per layer), so MoE decode gets cheaper per
    token only once a batch touches most experts.
    """

    time_s: float
    energy_j: float
    untouched: float

    def __post_init__(self) -> None:
        for label in ("time_s", "energy_j"):
            v = getattr(self, label)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"experts.{label} must be a finite number ≥ 0, got {v!r}")
        if not 0.0 < self.untouched < 1.0:
            raise ValueError(f"experts.untouched must be in (0, 1) (1 − top_k / experts), got {self.untouched!r}")

    def share(self, tokens: ArrayLike) -> np.ndarray:
        """Expected fraction of the routed experts a step of `tokens` tokens touches."""
        return -np.expm1(np.asarray(tokens, dtype=float) * np.log(self.untouched))


@dataclass(frozen=True)
class Overlap:
    """A step that prefills reads its weights while it computes its prompt tokens: the shorter of
    the two is hidden behind the longer (the roofline), so such a step costs less than its linear
    coefficients say.

    weights_s, weights_j: the weights' read of one step (s; J: the replica's static power over it),
    the part of the constant coefficient a prefill can hide; per_token_s, per_token_j: the prefill
    compute of one prompt token (s; J: static power over it). A step prefilling n tokens costs
    min(weights, per_token·n) less, time and energy each (`hidden`). Decode steps are unchanged
    (their overlap is in the fitted constants).
    """

    weights_s: float
    per_token_s: float
    weights_j: float
    per_token_j: float

    def __post_init__(self) -> None:
        for label in ("weights_s", "per_token_s", "weights_j", "per_token_j"):
            v = getattr(self, label)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"overlap.{label} must be a finite number ≥ 0, got {v!r}")

    def hidden(self, tokens: ArrayLike, which: str) -> np.ndarray:
        """Time (`which`='time', s) or energy ('energy', J) a step prefilling `tokens` tokens hides."""
        n = np.asarray(tokens, dtype=float)
        if which == "time":
            return np.minimum(self.weights_s, self.per_token_s * n)
        return np.minimum(self.weights_j, self.per_token_j * n)


def with_reads(
    time_coef: ArrayLike, energy_coef: ArrayLike, experts: ExpertReads | None, overlap: Overlap | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The six step coefficients (s, J) with the expert reads appended as a seventh (0 for a
    dense model) and the prefill overlap's weights and per-token parts as an eighth and ninth (0
    without one): the layout of a clock ladder's rows (`oracle.clocks.ladder`)."""
    x, o = experts, overlap
    t = np.append(
        np.asarray(time_coef, dtype=float),
        [0.0 if x is None else x.time_s, 0.0 if o is None else o.weights_s, 0.0 if o is None else o.per_token_s],
    )
    e = np.append(
        np.asarray(energy_coef, dtype=float),
        [0.0 if x is None else x.energy_j, 0.0 if o is None else o.weights_j, 0.0 if o is None else o.per_token_j],
    )
    return t, e


FAMILY_KEY = "gpu_constants"
"""A refined oracle's provenance: its GPU family's hardware constants, beside its own (`constants`)."""


@dataclass
class Oracle:
    """Step-level energy and time model. Coefficients are per unit of each feature in `FEATURES`.

    energy_coef_j: J per feature unit; time_coef_s: s per feature unit; both non-negative.
    """

    name: str
    model: str
    gpu: str
    backend: str
    energy_coef_j: np.ndarray
    time_coef_s: np.ndarray
    idle_power_w: float
    power_limit_w: float | None = None
    calibrated: CalibratedRange = field(default_factory=CalibratedRange)
    memory: MemorySpec | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    experts: ExpertReads | None = None  # a mixture of experts' routed-expert reads (None: dense)
    gpus: int = 1  # GPUs of one replica (its coefficients, idle power and limit count all of them)
    overlap: Overlap | None = None  # what a prefill step hides of its weights' read (None: nothing)
    clock: ClockSpec | None = None  # clock parameters fitted with it (None: its GPU's, `oracle.clock_specs`)

    def __post_init__(self) -> None:
        if not (isinstance(self.gpus, int) and self.gpus >= 1):
            raise ValueError(f"gpus must be a whole number ≥ 1, got {self.gpus!r}")
        self.energy_coef_j = _coef(self.energy_coef_j, "energy_coef_j")
        self.time_coef_s = _coef(self.time_coef_s, "time_coef_s")
        if not np.any(self.time_coef_s > 0):
            raise ValueError(
                "time_coef_s are all zero: every step would take 0 s (TTFT 0, infinite power); refit the oracle"
            )
        t = self.time_coef_s
        if t[F.CONST] == 0 and not (np.any(t[[F.DECODE_SEQS, F.DECODE_CTX]] > 0) and np.any(t[F.PREFILL_SEQS :] > 0)):
            kind = "decode" if np.all(t[[F.DECODE_SEQS, F.DECODE_CTX]] == 0) else "prefill"
            raise ValueError(
                f"time_coef_s give every {kind} step 0 s (const and all {kind} coefficients are zero), "
                "so TTFT or TPOT would be 0 and step power infinite; refit the oracle"
            )
        if not (np.isfinite(self.idle_power_w) and self.idle_power_w >= 0):
            raise ValueError(f"idle_power_w must be a finite non-negative number of W, got {self.idle_power_w}")
        if self.power_limit_w is not None and not (
            np.isfinite(self.power_limit_w) and self.power_limit_w >= self.idle_power_w and self.power_limit_w > 0
        ):
            raise ValueError(
                f"power_limit_w must be a positive number of W, at least idle_power_w ({self.idle_power_w:g}), "
                f"got {self.power_limit_w}"
            )
        self._warned = False

    # --- step level -----------------------------------------------------------------------
    def step_energy(self, x: ArrayLike) -> np.ndarray:
        """Energy (J) of steps with feature vectors x (shape (..., 6)), expert reads and the
        prefill overlap included."""
        x = np.asarray(x, dtype=float)
        return (
            x @ self.energy_coef_j + self._expert_part(x, "energy_j") - self._hidden(x[..., F.PREFILL_TOKENS], "energy")
        )

    def step_time(self, x: ArrayLike) -> np.ndarray:
        """Duration (s) of steps with feature vectors x (shape (..., 6)), expert reads and the
        prefill overlap included."""
        x = np.asarray(x, dtype=float)
        return x @ self.time_coef_s + self._expert_part(x, "time_s") - self._hidden(x[..., F.PREFILL_TOKENS], "time")

    def _hidden(self, tokens: ArrayLike, which: str) -> np.ndarray | float:
        """What a step prefilling `tokens` tokens hides (`Overlap.hidden`; 0 without an overlap)."""
        return 0.0 if self.overlap is None else self.overlap.hidden(tokens, which)

    def _expert_part(self, x: np.ndarray, which: str) -> np.ndarray | float:
        if self.experts is None:
            return 0.0
        tokens = x[..., F.DECODE_SEQS] + x[..., F.PREFILL_TOKENS]
        reads = self.experts.energy_j if which == "energy_j" else self.experts.time_s
        return reads * self.experts.share(tokens)

    def coef_at_batch(self, which: str, batch: ArrayLike = 1) -> np.ndarray:
        """Energy (`which`='energy') or time ('time') coefficients with the expert reads of a
        decode step of `batch` sequences folded into the constant (shape (..., 6)): what the
        per-request polynomial of B requests in lockstep uses (their prefill touches every expert;
        folded at the decode batch, which most steps run)."""
        if which not in ("energy", "time"):
            raise ValueError(f"which must be 'energy' or 'time', got {which!r}")
        coef = self.energy_coef_j if which == "energy" else self.time_coef_s
        if self.experts is None:
            return coef
        b = np.asarray(batch, dtype=float)
        out = np.broadcast_to(coef, (*b.shape, F.N_FEATURES)).copy()
        reads = self.experts.energy_j if which == "energy" else self.experts.time_s
        out[..., F.CONST] += reads * self.experts.share(b)
        return out

    # --- request level (B identical requests in lockstep) ----------------------------------
    def theta(self, batch: ArrayLike = 1) -> np.ndarray:
        """θ1…θ6 (J) of the per-request energy polynomial at batch size `batch` (without the
        prefill overlap, which is not polynomial in n_in: `energy` adds it)."""
        return F.theta_from_coef(self.coef_at_batch("energy", batch), batch)

    def _theta_at(self, which: str, n_in: ArrayLike, batch: ArrayLike) -> np.ndarray:
        """θ (energy J per request, or time s of the batch) with the overlap of the batch's one
        prefill step of batch·n_in tokens in θ5 (shape: n_in and batch broadcast, then 6)."""
        theta = self.theta(batch) if which == "energy" else self.theta_time(batch)
        if self.overlap is None:
            return theta
        b = np.asarray(batch, dtype=float)
        i = np.asarray(n_in, dtype=float)
        hidden = self.overlap.hidden(b * i, which)
        share = hidden / b if which == "energy" else hidden  # a request's share; time: the batch waits for all
        out = np.broadcast_to(theta, (*np.broadcast_shapes(i.shape, b.shape), F.N_FEATURES)).copy()
        out[..., 4] -= share
        return out

    def theta_time(self, batch: ArrayLike = 1) -> np.ndarray:
        """θ1…θ6 (s) of the latency polynomial at batch size `batch`.

        Every request in a lockstep batch waits for the whole batch's steps, so its latency is B
        times its share of the summed step time.
        """
        b = np.asarray(batch, dtype=float)
        return b[..., None] * F.theta_from_coef(self.coef_at_batch("time", batch), batch)

    def energy(
        self, n_in: ArrayLike, n_out: ArrayLike, batch: ArrayLike = 1, *, check_range: bool = True
    ) -> np.ndarray:
        """GPU energy (J) of one request, its share of shared step costs included.

        check_range=False: internal scans (policy helpers) that may leave the calibrated range on
        purpose, without using up the once-per-oracle range warning.
        """
        if check_range:
            self._check_range(n_in, n_out, batch)
        return F.polynomial(self._theta_at("energy", n_in, batch), n_in, n_out)

    def time(self, n_in: ArrayLike, n_out: ArrayLike, batch: ArrayLike = 1, *, check_range: bool = True) -> np.ndarray:
        """End-to-end latency (s) of one request run in a lockstep batch of `batch`."""
        if check_range:
            self._check_range(n_in, n_out, batch)
        return F.polynomial(self._theta_at("time", n_in, batch), n_in, n_out)

    def efficiency(
        self, n_in: ArrayLike, n_out: ArrayLike, batch: ArrayLike = 1, *, check_range: bool = True
    ) -> np.ndarray:
        """Output tokens per joule."""
        return np.asarray(n_out, dtype=float) / self.energy(n_in, n_out, batch, check_range=check_range)

    def optimal_output(self, n_in: ArrayLike, batch: ArrayLike = 1, *, check_range: bool = True) -> np.ndarray:
        """n_out* (tokens): the output length that minimises energy per output token."""
        if check_range:
            self._check_range(n_in, None, batch)
        return F.optimal_output(self._theta_at("energy", n_in, batch), n_in)

    def power_violations(self, max_batch: int | None = None) -> list[str]:
        """Steps over the calibrated range whose implied power (W) leaves [idle, limit]."""
        steps = representative_steps(self.calibrated, max_batch)
        with np.errstate(divide="ignore", invalid="ignore"):
            power = self.step_energy(steps) / self.step_time(steps)
        out = []
        if np.any(power < self.idle_power_w * 0.999):
            out.append(f"implied step power down to {power.min():.0f} W, below idle power {self.idle_power_w:.0f} W")
        if self.power_limit_w and np.any(power > self.power_limit_w * 1.001):
            out.append(
                f"implied step power up to {power.max():.0f} W, above the power limit {self.power_limit_w:.0f} W"
            )
        return out

    @property
    def refined(self) -> bool:
        """Whether its constants were refined on its own configuration's measured runs
        (`oracle.refine`): its provenance then keeps its GPU family's beside them (`FAMILY_KEY`)."""
        return FAMILY_KEY in self.provenance

    @property
    def fitted_batch(self) -> float | None:
        """The one batch size (sequences) the oracle was calibrated at, or None for a range of them."""
        lo, hi = self.calibrated.batch
        return lo if lo == hi else None

    def _check_range(self, n_in: ArrayLike, n_out: ArrayLike | None, batch: ArrayLike) -> None:
        """Warn once when asked more than 2x outside the calibrated lengths or batches, or at any
        batch other than the one batch size a one-batch oracle was fitted at."""
        if self._warned:
            return
        bad = []
        for label, values, (lo, hi) in (
            ("n_in", n_in, self.calibrated.n_in),
            ("n_out", n_out, self.calibrated.n_out),
            ("batch", batch, self.calibrated.batch),
        ):
            if values is None:
                continue
            v = np.asarray(values, dtype=float)
            slack = 1.0 if label == "batch" and self.fitted_batch is not None else 2.0
            if v.size and (np.nanmin(v) < lo / slack or np.nanmax(v) > hi * slack):
                bad.append(f"{label} in [{np.nanmin(v):g}, {np.nanmax(v):g}] vs calibrated [{lo:g}, {hi:g}]")
        if bad:
            self._warned = True
            how = "more than 2x " if self.fitted_batch is None else ""
            one_batch = "" if self.fitted_batch is None else f" It was {batch_note(self.fitted_batch)}."
            warnings.warn(
                f"oracle {self.name!r} asked {how}outside its calibrated range: {'; '.join(bad)}.{one_batch} "
                "Predictions there are extrapolations (this warning is shown once per oracle).",
                OracleRangeWarning,
                stacklevel=3,
            )

    # --- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (format, version, coefficients keyed by feature name)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "model": self.model,
            "gpu": self.gpu,
            "backend": self.backend,
            "features": list(F.FEATURES),
            "energy_coef_j": dict(zip(F.FEATURES, map(float, self.energy_coef_j), strict=True)),
            "time_coef_s": dict(zip(F.FEATURES, map(float, self.time_coef_s), strict=True)),
            "idle_power_w": float(self.idle_power_w),
            "power_limit_w": None if self.power_limit_w is None else float(self.power_limit_w),
            "calibrated": {k: list(v) for k, v in asdict(self.calibrated).items()},
            "memory": None if self.memory is None else asdict(self.memory),
            "settings": self.settings,
            "fit": self.fit,
            "provenance": self.provenance,
            **({} if self.gpus == 1 else {"gpus": self.gpus}),
            **({} if self.experts is None else {"experts": asdict(self.experts)}),
            **({} if self.overlap is None else {"overlap": asdict(self.overlap)}),
            **({} if self.clock is None else {"clock": asdict(self.clock)}),
        }

    def save(self, path: str | Path) -> Path:
        """Write the oracle as versioned JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> Oracle:
        """Build from `to_dict` output; errors name the source and the bad field."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise OracleFormatError(f'{source}: not a sweetspot oracle (expected "format": "{FORMAT}")')
        if d.get("version") != VERSION:
            raise OracleFormatError(
                f"{source}: oracle format version {d.get('version')!r}, this sweetspot-sim reads version {VERSION}"
            )
        try:
            calibrated = _mapping(d.get("calibrated") or {}, "calibrated")
            memory = d.get("memory")
            return cls(
                name=_text(d, "name"),
                model=_text(d, "model"),
                gpu=_text(d, "gpu"),
                backend=_text(d, "backend"),
                energy_coef_j=_coef_from_json(d["energy_coef_j"], "energy_coef_j"),
                time_coef_s=_coef_from_json(d["time_coef_s"], "time_coef_s"),
                idle_power_w=_number(d["idle_power_w"], "idle_power_w"),
                power_limit_w=None if d.get("power_limit_w") is None else _number(d["power_limit_w"], "power_limit_w"),
                calibrated=CalibratedRange(**{k: _pair(v, f"calibrated.{k}") for k, v in calibrated.items()}),
                memory=None if memory is None else MemorySpec(**_memory_fields(memory)),
                settings=_mapping(d.get("settings") or {}, "settings"),
                fit=_mapping(d.get("fit") or {}, "fit"),
                provenance=_mapping(d.get("provenance") or {}, "provenance"),
                experts=None if d.get("experts") is None else ExpertReads(**_expert_fields(d["experts"])),
                gpus=_whole(d.get("gpus", 1), "gpus"),
                overlap=None if d.get("overlap") is None else Overlap(**_overlap_fields(d["overlap"])),
                clock=None if d.get("clock") is None else ClockSpec(**_clock_fields(d["clock"])),
            )
        except KeyError as e:
            raise OracleFormatError(f"{source}: missing key {e.args[0]!r}") from e
        except (TypeError, ValueError) as e:
            raise OracleFormatError(f"{source}: {e}") from e

    @classmethod
    def load(cls, name_or_path: str | Path) -> Oracle:
        """Load an oracle JSON file, or a shipped oracle by name (e.g. 'llama-3.1-8b_h100'); an
        oracle whose steps or memory the GPU it names cannot have is refused (`oracle.plausible`)."""
        path = Path(name_or_path)
        if not path.exists():
            path = _shipped_path(str(name_or_path))
        try:
            data = json.loads(require_regular_file(path, "oracle file", MAX_ORACLE_BYTES).read_text())
        except NotARegularFileError as e:
            raise OracleFormatError(str(e)) from None
        except json.JSONDecodeError as e:
            raise OracleFormatError(f"{path}: not valid JSON ({e})") from e
        oracle = cls.from_dict(data, source=str(path))
        from oracle.plausible import implausible  # it reads the oracle's steps: imported here, not in a cycle

        problems = implausible(oracle, representative_steps(oracle.calibrated))
        if problems:
            raise OracleFormatError(f"{path}: physically implausible for {oracle.gpu!r}: {'; '.join(problems)}")
        return oracle


def representative_steps(calibrated: CalibratedRange, max_batch: float | None = None) -> np.ndarray:
    """Feature vectors (rows, 6) of decode and prefill steps spanning a calibrated range.

    Batches from the calibrated minimum to max_batch (default: the calibrated maximum; a one-batch
    oracle's steps are those of its batch only, where its split of shared and per-sequence costs
    is determined) and contexts from the shortest prompt to the longest prompt plus output, 8
    geometric steps each: where implied step power (energy / time, W) is checked, and constrained
    when fitting.
    """
    hi_b = float(max_batch or calibrated.batch[1])
    lo_b = min(float(calibrated.batch[0]), hi_b)
    b = np.unique(np.geomspace(lo_b, max(hi_b, lo_b), 8).round())
    ctx = np.geomspace(calibrated.n_in[0], calibrated.n_in[1] + calibrated.n_out[1], 8)
    bb, cc = np.meshgrid(b, ctx)
    decode = F.step_features(decode_seqs=bb, decode_ctx=bb * cc)
    prefill = F.step_features(prefill_seqs=bb, prefill_tokens=bb * cc, prefill_attn=bb * F.attn_pairs(cc))
    return np.concatenate([decode.reshape(-1, F.N_FEATURES), prefill.reshape(-1, F.N_FEATURES)])


@dataclass(frozen=True)
class RangeShare:
    """How much of a workload lies more than `slack`× outside an oracle's calibrated lengths.

    requests: requests in the workload; outside: those with n_in or n_out out of range; tokens
    and tokens_outside: their n_in + n_out summed (tokens).
    """

    requests: int
    outside: int
    tokens: float
    tokens_outside: float
    n_in_max: float
    n_out_max: float

    @property
    def request_pct(self) -> float:
        """Share of requests outside the range (%)."""
        return 100.0 * self.outside / self.requests if self.requests else 0.0

    @property
    def token_pct(self) -> float:
        """Share of tokens in requests outside the range (%)."""
        return 100.0 * self.tokens_outside / self.tokens if self.tokens else 0.0


def range_share(calibrated: CalibratedRange, n_in: ArrayLike, n_out: ArrayLike, slack: float = 2.0) -> RangeShare:
    """The share of requests (n_in, n_out tokens) more than `slack`× outside `calibrated`; pure."""
    i = np.asarray(n_in, dtype=float).reshape(-1)
    o = np.asarray(n_out, dtype=float).reshape(-1)
    bad = np.zeros(i.shape, dtype=bool)
    for v, (lo, hi) in ((i, calibrated.n_in), (o, calibrated.n_out)):
        bad |= (v < lo / slack) | (v > hi * slack)
    tokens = i + o
    return RangeShare(
        requests=int(i.size),
        outside=int(bad.sum()),
        tokens=float(tokens.sum()),
        tokens_outside=float(tokens[bad].sum()),
        n_in_max=float(i.max()) if i.size else 0.0,
        n_out_max=float(o.max()) if o.size else 0.0,
    )


def warn_outside_range(oracle: Oracle, n_in: ArrayLike, n_out: ArrayLike, what: str = "the workload") -> RangeShare:
    """Warn (OracleRangeWarning) once if any request lies more than 2× outside the oracle's range.

    Independent of the oracle's own once-per-oracle warning; returns the share it measured.
    """
    share = range_share(oracle.calibrated, n_in, n_out)
    if share.outside:
        c = oracle.calibrated
        warnings.warn(
            f"{share.outside:,} of {share.requests:,} requests of {what} ({share.request_pct:.1f} % of requests, "
            f"{share.token_pct:.1f} % of tokens) lie more than 2x outside the calibrated range of oracle "
            f"{oracle.name!r} (n_in [{c.n_in[0]:g}, {c.n_in[1]:g}], n_out [{c.n_out[0]:g}, {c.n_out[1]:g}]; "
            "longest here: "
            f"n_in {share.n_in_max:g}, n_out {share.n_out_max:g}): their energy and time are extrapolations. "
            "Measure an oracle over longer lengths, or cut the trace (a shaping policy, or trace options).",
            OracleRangeWarning,
            stacklevel=3,
        )
    return share


def shipped_oracles() -> list[str]:
    """Names of the oracles that ship with the package."""
    root = resources.files("oracle").joinpath(SHIPPED_DIR)
    return sorted(p.name[: -len(".json")] for p in root.iterdir() if p.name.endswith(".json"))


def _shipped_path(name: str) -> Path:
    names = shipped_oracles()
    if name not in names:
        why = _why_not_shipped(name, names)
        if why:
            raise FileNotFoundError(f"no oracle file {name!r} and no shipped oracle of that name: {why}")
        close = difflib.get_close_matches(name, names, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise FileNotFoundError(
            f"no oracle file {name!r} and no shipped oracle of that name.{hint} "
            f"{len(names)} ship (python -m oracle.show --list)."
        )
    return Path(str(resources.files("oracle").joinpath(SHIPPED_DIR, f"{name}.json")))


def _why_not_shipped(name: str, names: list[str]) -> str:
    """For a name of the form MODEL_GPU[_tpN|_epN] with a known model and GPU: why no such oracle
    ships (the layout cannot serve the model) and which layouts do; '' otherwise."""
    from oracle.arch import gpu_names, model_names  # (specs import nothing from here)

    parts = name.split("_")
    if len(parts) not in (2, 3) or parts[0] not in model_names() or parts[1] not in gpu_names():
        return ""
    stem = f"{parts[0]}_{parts[1]}"
    shipped = [n for n in names if n == stem or n.startswith(stem + "_")]
    reason = ""
    layout = parts[2] if len(parts) == 3 else "tp1"
    if layout[:2] in ("tp", "ep") and layout[2:].isdigit() and int(layout[2:]) >= 1:
        from oracle.arch import load_gpu, load_model
        from oracle.derive import Layout, LayoutError

        try:
            Layout(int(layout[2:]), layout[:2] == "ep").check(load_model(parts[0]), load_gpu(parts[1]))
        except LayoutError as e:
            reason = f"{e}. "
    where = f"shipped layouts: {', '.join(shipped)}" if shipped else "no layout of it ships on this GPU"
    return f"{reason}{where} (a name is MODEL_GPU for one GPU, MODEL_GPU_tpN or _epN for N GPUs per replica)"


def _coef(values: ArrayLike, label: str) -> np.ndarray:
    c = np.asarray(values, dtype=float).reshape(-1)
    if c.shape != (F.N_FEATURES,):
        raise ValueError(f"{label} needs {F.N_FEATURES} values ({', '.join(F.FEATURES)}), got {c.size}")
    if not np.all(np.isfinite(c)) or np.any(c < 0):
        raise ValueError(f"{label} must be finite and non-negative, got {c.tolist()}")
    return c


def _coef_from_json(value: Any, label: str) -> np.ndarray:
    if isinstance(value, dict):
        unknown = set(value) - set(F.FEATURES)
        if unknown:
            raise ValueError(f"{label} has unknown feature(s) {sorted(unknown)}; known: {list(F.FEATURES)}")
        missing = [k for k in F.FEATURES if k not in value]
        if missing:
            raise ValueError(f"{label} lacks feature(s) {missing}")
        return np.array([_number(value[k], f"{label}.{k}") for k in F.FEATURES])
    if isinstance(value, list):
        return np.array([_number(v, f"{label}[{i}]") for i, v in enumerate(value)])
    raise TypeError(f"{label} must be a mapping of feature name to number, got {type(value).__name__}")


def _number(value: Any, label: str) -> float:
    """A JSON number (not a string, not a boolean), as float; errors name the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = " (a string: write the number without quotes)" if isinstance(value, str) else ""
        raise TypeError(f"field {label!r} must be a number, got {value!r}{hint}")
    return float(value)


def _text(d: dict[str, Any], key: str) -> str:
    value = d[key]
    if not isinstance(value, str) or not value:
        raise TypeError(f"field {key!r} must be a non-empty string, got {value!r}")
    return value


def _pair(value: Any, label: str) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise TypeError(f"field {label!r} must be a [low, high] pair of numbers, got {value!r}")
    lo, hi = (_number(v, label) for v in value)
    return lo, hi


def _mapping(value: Any, label: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"field {label!r} must be a mapping, got {value!r}")
    return dict(value)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"cannot serialise {type(o).__name__}")


def _expert_fields(experts: Any) -> dict[str, float]:
    known = ("time_s", "energy_j", "untouched")
    m = _mapping(experts, "experts")
    unknown = sorted(set(m) - set(known))
    if unknown or set(known) - set(m):
        raise ValueError(f"experts needs exactly {list(known)}, got {sorted(m)}")
    return {k: _number(m[k], f"experts.{k}") for k in known}


def _overlap_fields(overlap: Any) -> dict[str, float]:
    known = ("weights_s", "per_token_s", "weights_j", "per_token_j")
    m = _mapping(overlap, "overlap")
    if set(m) != set(known):
        raise ValueError(f"overlap needs exactly {list(known)}, got {sorted(m)}")
    return {k: _number(m[k], f"overlap.{k}") for k in known}


def _clock_fields(clock: Any) -> dict[str, Any]:
    """The `clock` object's fields (`ClockSpec` checks their ranges)."""
    known = [f.name for f in fields(ClockSpec)]
    m = _mapping(clock, "clock")
    if set(m) != set(known):
        raise ValueError(f"clock needs exactly {known}, got {sorted(m)}")
    out: dict[str, Any] = {"gpu": _text(m, "gpu")}
    for k in known[1:]:
        v = _number(m[k], f"clock.{k}")
        out[k] = _whole(v, f"clock.{k}") if k in ("min_mhz", "max_mhz", "step_mhz") else v
    return out


def _whole(v: Any, label: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | float) or not float(v).is_integer() or v < 1:
        raise ValueError(f"{label} must be a whole number ≥ 1, got {v!r}")
    return int(v)


def _memory_fields(memory: Any) -> dict[str, Any]:
    """The `memory` object's numbers by key (MemorySpec checks their ranges and whole counts)."""
    return {k: _number(v, f"memory.{k}") for k, v in _mapping(memory, "memory").items()}
