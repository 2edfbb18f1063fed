"""`python -m sim.plots FOLDER ...`: draw the plots of finished runs again (`sim.plots.compare.main`)."""

from sim.plots.compare import main

raise SystemExit(main())
