"""MLflow tracking for every command: runs, sweeps (parent runs), the store, the cross-run report.

`sim` and `calibrate` log through `log_run` (a single `python -m sim` from a helper process,
`tracking.background`); a Hydra sweep creates its store, experiment and parent run once in
`tracking.callback`; `python -m tracking FOLDER` logs a finished run's output
folder later (e.g. after the server was down); `python -m sim.report` compares runs.
"""

from tracking.log import DatasetRef, flatten, log_run, numeric_metrics
from tracking.store import DEFAULT_URI, TrackingConfig, TrackingError, ensure_experiment

__all__ = [
    "DEFAULT_URI",
    "DatasetRef",
    "TrackingConfig",
    "TrackingError",
    "ensure_experiment",
    "flatten",
    "log_run",
    "numeric_metrics",
]
