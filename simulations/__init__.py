"""fedrec.simulations: running many clients on one machine, baselines, benchmarks and the CLI."""
