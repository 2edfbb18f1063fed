"""`python -m sim.report` (or `sweetspot-report`): compare MLflow runs; the code lives in tracking.report."""

from tracking.report import main

if __name__ == "__main__":
    raise SystemExit(main())
