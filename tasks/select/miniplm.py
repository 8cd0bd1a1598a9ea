"""Stage ``miniplm``: MiniPLM's Difference Sampling (Gu et al. 2025, "MiniPLM: Knowledge
Distillation for Pre-Training Language Models").

Per document, ``miniplm_score`` = bpb under a small *reference* proxy − bpb under a larger
*teacher* proxy. The paper ranks by the per-token log-likelihood ratio
log p_teacher(x) − log p_ref(x) and keeps the top α of the corpus (α = 0.5 by default):
documents the teacher finds easy and the reference hard — what the larger model learned and
the small one did not — rank first; text both find easy (boilerplate) or both find hard
(noise) scores near zero. Here both losses are per UTF-8 byte (``tasks/select/loss.py``), so
the two models may have different tokenizers; with one tokenizer the order is the paper's up
to its per-token normalisation.

The decision is ``top_k`` on the stored column, in the filter stage:

    stages:
      extra:
        - use: tasks.select.miniplm:MiniPLM
          after: rewrite
          with: {reference: {run: SMALL_RUN}, teacher: {run: LARGE_RUN}}
      filter:
        corpus: {top_k: {column: miniplm_score, percent: 50}}   # the paper's alpha = 0.5

The stage also stores both loss columns (``loss_<label>``) and ``loss_bytes``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.identity import OPERATIONAL
from tasks.select import loss
from tasks.select.loss import ModelRef
from tasks.select.loss_stage import LossScore
from tasks.stage import RunInfo

COLUMN = "miniplm_score"


class Config(BaseModel):
    """``with:`` of the stage."""

    model_config = ConfigDict(extra="forbid")

    reference: ModelRef = Field(description="the small reference proxy")
    teacher: ModelRef = Field(description="the larger teacher proxy")
    max_tokens: int = Field(1024, ge=1, description="score each document's first max_tokens "
                            "tokens (of the reference's tokenizer)")
    column: str = Field(COLUMN, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                        description="the score column: reference bpb − teacher bpb")
    batch_docs: Annotated[int, OPERATIONAL] = Field(
        1024, ge=1, description="documents read (and held) at a time")
    batch_size: Annotated[int, OPERATIONAL] = Field(16, ge=1, description="windows per "
                                                    "forward pass")

    @model_validator(mode="after")
    def _labels(self) -> Config:
        loss.unique_names([self.reference, self.teacher])
        return self


class MiniPLM(LossScore):
    name = "miniplm"
    code_version = 1
    recipe_key = "stages.extra (use: tasks.select.miniplm:MiniPLM)"
    description = "MiniPLM difference sampling: reference bpb − teacher bpb per document"
    Config = Config  # type: ignore[assignment]

    def model_refs(self) -> list[ModelRef]:
        return [self.params.reference, self.params.teacher]  # the reference's tokenizer cuts

    def difference(self, models: list[dict[str, Any]]) -> tuple[str, str, str] | None:
        return (models[0]["column"], models[1]["column"], self.params.column)

    def config(self, run: RunInfo, variant: Any = None) -> Any:
        return {**super().config(run, variant), "column": self.params.column}
