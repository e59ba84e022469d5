"""Collecting comparisons: candidate responses sampled from a policy (:mod:`.generate`, the one
sampling path of rlhfkit), ranked by people in the annotation app (:mod:`rlhfkit.collect.annotate`)."""
