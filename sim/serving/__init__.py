"""Serving: one server, a fleet of them behind a router, closed-loop clients, and the run that
replays a trace through a policy and a fleet (alone, or split into time windows)."""
