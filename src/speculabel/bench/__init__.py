"""The bench: the paper's measurements (agreement, coverage, cost, speedup computed and measured,
Criterion 2 with a guarantee) on real data, from a vote store."""
