"""The online-learning loop's pieces above the trainer: :mod:`~kiln.online.world`, the synthetic
click stream with drifting user interests (demos, tests and benchmarks of the loop)."""
