"""Adaptive runs: classify learns from the judge while it runs, and a random audit certifies
the threshold it uses (``speculabel classify --adaptive``)."""
