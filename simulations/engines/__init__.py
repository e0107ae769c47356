"""How federations run on one machine: the in-process engine, Flower's Ray
engine, worker processes, and the timeline replay that drives the server's round loop."""
