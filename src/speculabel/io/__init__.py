"""Everything that touches files: input tables, the results file, the vote store, data sets."""
