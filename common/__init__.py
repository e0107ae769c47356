"""fedrec.common: the recommender math and the data, shared by devices, server and simulations.

Pure numpy; no Flower and no I/O beyond reading (and fetching) datasets.
"""
