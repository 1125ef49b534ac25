"""The benchmark runner: the run pipeline, the loop, results, resume, training of missing heads, sweeps."""
