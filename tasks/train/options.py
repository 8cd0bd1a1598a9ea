"""The nested sections of the train config: temperature sampling, online mixing, curriculum.

Torch-free, like config.py. Every field is versioned (tasks/identity.py): each changes what the
model is trained on -- but the stability gap's probe_* fields, which only measure.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.identity import OPERATIONAL


class MixTemperature(BaseModel):
    """Temperature sampling with the temperature moving from `start` to `end` over training.

    p_s ~ w_s * n_s^(1/T) (n_s: the source's rows, w_s: its source_weights entry): from
    balanced towards natural proportions ("Upsample or Upweight?", the direction of its
    Cooldown)."""

    model_config = ConfigDict(extra="forbid")
    start: float = Field(5.0, gt=0, description="temperature at the first step (large = close "
                         "to uniform over sources)")
    end: float = Field(1.0, gt=0, description="temperature at the end (1 = natural proportions)")
    shape: Literal["linear", "step"] = Field(
        "linear", description="linear: T moves linearly from start to end by `until`; step: T "
        "is start before `until`, end from then on")
    until: float = Field(1.0, gt=0, le=1, description="share of the steps at which T reaches "
                         "end (1 = on the last step)")


class MixingConfig(BaseModel):
    """Online data mixing: the proportions are set during training (method aioli).

    aioli ("Aioli: A Unified Optimization Framework for Language Model Data Mixing", Chen et
    al. 2024): each round first estimates the linear dynamic mixing law's
    interaction matrix A from short steps on perturbed proportions, then trains with
    p <- p * exp(step_size * A^T 1) / Z. Defaults: the paper's code (HazyResearch/aioli) on
    arXiv/StackExchange: 5,000 steps in rounds of 250, LearnParams of 4 sweeps x 4 steps per
    source, eta 0.2, one-hot factor 0.625, A normalised."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["aioli"] = Field(description="aioli: the only method so far")
    rounds: int = Field(20, ge=1, description="rounds over the run; proportions are updated once "
                        "per round")
    estimation_fraction: float = Field(
        0.128, gt=0, lt=1, description="share of each round spent estimating A (delta; the "
                                       "paper's 32 of 250 steps)")
    step_size: float = Field(0.2, gt=0, description="eta of the exponentiated-gradient update")
    sweeps: int = Field(4, ge=1, description="passes over the sources per estimation (the "
                        "paper's lp_rounds)")
    one_hot_factor: float = Field(
        0.625, gt=0, le=1, description="share of the perturbed source in an estimation step "
        "(the rest spread evenly; 1 = one-hot); must exceed 1 / number of sources")
    ema: float | None = Field(None, ge=0, lt=1, description="weight of the previous rounds' A "
                              "in an exponential moving average; null = none (the default "
                              "of the paper's code)")
    init: Literal["uniform", "static"] = Field(
        "uniform", description="starting proportions: uniform over sources (the paper), or "
        "the recipe's fixed ones (natural shares x source_weights)")
    probe_rows: int = Field(16, ge=1, description="training rows per source whose loss "
                            "(no gradient) measures each estimation mixture's effect")


class OrderConfig(BaseModel):
    """A curriculum: training rows in the order of a per-row score instead of shuffled.

    "How Learning Rate Decay Wastes Your Best Data in Curriculum-Based LLM Pretraining": the row
    score is the token-weighted mean of a filter score column over the row's documents, carried
    by tokenize."""

    model_config = ConfigDict(extra="forbid")
    by: str = Field(description="a numeric column of the filter's kept documents, e.g. "
                    "gopher_quality_alpha_words_frac")
    ascending: bool = Field(True, description="lowest scores first (the best data last)")


class StabilityConfig(BaseModel):
    """The stability gap: a continued run's top new rows for several epochs, old-domain loss.

    "Efficient Continual Pre-training by Mitigating the Stability Gap" (Wang et al. 2024): the
    new data cut to its top rows by a stored score and seen for several epochs, and the old
    domain's loss measured over the first steps (tasks/train/stability.py). Needs init_from."""

    model_config = ConfigDict(extra="forbid")
    by: str | None = Field(
        None, description="row-score column (carried by tokenize, as for order.by): train on "
        "the new data's top rows by it; null = all rows, only the old-domain loss curve")
    top_percent: float = Field(10.0, gt=0, le=100, description="the subset is at most this "
                               "share of the scored rows (the highest scores)")
    epochs: float = Field(4.0, gt=0, description="the subset is sized so that the run's "
                          "token budget sees it this many times (fewer rows when top_percent "
                          "is smaller; then more epochs)")
    probe_steps: Annotated[int, OPERATIONAL] = Field(
        50, ge=0, description="measure the old-domain loss up to this step")
    probe_every: Annotated[int, OPERATIONAL] = Field(
        5, ge=1, description="steps between old-domain loss measurements (and step 0)")
    probe_rows: Annotated[int, OPERATIONAL] = Field(
        16, ge=1, description="rows of the init run's data the old-domain loss is the mean over")
