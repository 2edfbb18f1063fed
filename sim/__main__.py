"""`python -m sim [overrides]`: simulate a policy against the baseline (see conf/sim.yaml)."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from sim.app import app_config, execute, prepare
from sim.config import ConfigError


@hydra.main(config_path="pkg://conf", config_name="sim", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Validate the composed config, then run; a bad config exits with the key it names."""
    try:
        config = app_config(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
        prepared = prepare(config)
    except ConfigError as e:
        sys.exit(f"configuration error: {e}")
    execute(prepared)


if __name__ == "__main__":
    main()
