"""Model-based selection: a score computed once, decided later in the filter stage.

- ``dsir`` (``tasks/select/dsir.py``): a corpus rule — hashed n-gram features stored by the
  score stage, importance resampling toward a target set decided in the filter stage.
- ``dclm_fasttext`` (``tasks/select/fasttext_stage.py``): a stage before ``score`` that trains
  DCLM's fastText classifier (reference set vs a sample of the pool) and stores its score;
  ``top_k`` (``tasks/corpus/top_k.py``) keeps the top k % of it.
- ``sweep`` (``tasks/select/sweep.py``): what other keep settings would keep, per source,
  read from a run's stored scores (``datamill sweep``).
"""
