"""The benchmarks (``fedrec bench ...`` and ``fedrec simulate``): each runs
federated and centralized models on the same data and writes JSON and a plot."""
