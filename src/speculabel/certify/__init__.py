"""Certification: the loosest acceptance threshold a labelled sample proves safe.

* :mod:`~speculabel.certify.binomial`: exact p-values and Clopper-Pearson bounds.
* :mod:`~speculabel.certify.threshold`: fixed-sequence (and fallback, Bonferroni) threshold search.
* :mod:`~speculabel.certify.scores`: votes -> each item's support and agreement.
* :mod:`~speculabel.certify.plan`: fit on one share, certify on the rest.
* :mod:`~speculabel.certify.splits`: the empirical check over random splits.
* :mod:`~speculabel.certify.votes`: the votes a calibration needs, from the store or computed.
"""
