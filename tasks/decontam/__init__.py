"""Decontamination: evaluation items found in training text.

- ``ngrams``: word n-grams of evaluation items as a hash index, and the scan of training text
  against it (drop the document or cut the overlapping spans).
- ``items``: where evaluation items come from — datamill's own held-out tasks, local
  lm-evaluation-harness tasks, the user's JSONL or text files.
- ``stage``: the ``decontaminate`` stage (after ``filter``, before ``tokenize``).
- ``report``: the per-task report, from a stage's shard statistics or an audit of a run.
- ``mink``: Min-K% Prob (Shi et al. 2023) of evaluation items under a trained proxy.
"""
