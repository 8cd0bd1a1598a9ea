"""Model-based selection: a score computed once, decided later in the filter stage.

Each selector is either an extra stage (``stages.extra``: it adds a score column to every
document and drops nothing) or a corpus rule (``filter.corpus``: a decision over stored
columns). Changing a decision re-runs only the filter stage. docs/selection.md has a recipe for
each. Where things are:

Classifiers and importance resampling
- ``fasttext_stage`` / ``fasttext_model`` / ``reference``: stage ``dclm_fasttext`` (DCLM's
  fastText classifier, reference set vs a sample of the pool).
- ``dsir`` / ``features``: corpus rule ``dsir`` (hashed n-gram importance resampling).
- ``buckets``: corpus rule ``quality_buckets`` (Nemotron-CC's ensemble of score percentiles into
  buckets 0–19; the rewrite stage can route prompts by bucket, tasks/prompts/routing.py).

LLM ratings (``annotate``: one annotation path over the rewrite stage's backends and cache)
- ``edu`` / ``edu_stage`` / ``edu_filter``: stage ``fineweb_edu`` (LLM scores a sample with the
  FineWeb-Edu prompt, a ridge head on the embeddings scores everything) and its ``keep >= 3``.
- ``dataman`` / ``dataman_stage`` / ``dataman_filter`` / ``dataman_topk``: stage ``dataman``
  (quality criteria, overall score, domain) and its decisions.

Embeddings
- ``embed`` / ``embed_stage``: stage ``embed`` (one Parquet of vectors per docs shard).
- ``kmeans`` / ``cluster_stage`` / ``cluster_work`` / ``cluster_report``: stage ``clusters``
  (k-means, SemDeDup similarity, k-center ranks, per-cluster statistics for the report).
- ``semdedup`` / ``density`` / ``diversity`` / ``quotas``: the corpus rules over those columns.
- ``kmeans_bench``: faiss vs scikit-learn k-means, run on demand (``python -m``).

Selection from datamill's own proxies
- ``loss`` / ``loss_stage``: stage ``loss_score`` (bits per byte per document under a model).
- ``miniplm``: stage ``miniplm`` (reference loss minus teacher loss).
- ``preselect``: stage ``preselect`` (predictive strength -> fastText classifier).

After a run
- ``sweep``: what other keep settings would keep, per source, from stored scores
  (``datamill sweep``).

Contamination of evaluation sets is tasks/decontam/.
"""
