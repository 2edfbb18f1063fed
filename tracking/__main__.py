"""`python -m tracking FOLDER...`: log finished runs' output folders to MLflow (see tracking.folder)."""

from tracking.folder import main

if __name__ == "__main__":
    raise SystemExit(main())
