"""What a run produces: per-request records, metrics, the typed summary, timelines, the output
folder and a Perfetto trace."""
