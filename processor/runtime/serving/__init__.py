"""The worker's HTTP face: metrics, health and readiness endpoint wiring, queryable state, and
the directory of workers that lets any worker answer for any key."""
