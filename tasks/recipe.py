"""Recipes: the YAML a user writes, validated by pydantic.

A recipe says *what* the data and model are (input, stages, parameters); environment variables
only say *where* things run. Unknown keys and bad values are errors that name the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tasks.corpus import get_rule
from tasks.corpus.base import CorpusRuleConfig
from tasks.corpus.exact import Config as ExactDedupConfig
from tasks.corpus.url import Config as UrlDedupConfig
from tasks.filters.base import FilterConfig, get_filter
from tasks.filters.minhash import Config as MinHashConfig
from tasks.identity import BY_CONTENT, OPERATIONAL
from tasks.recipe_rewrite import RewriteConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InputConfig(Strict):
    # the files themselves version ingest (by fingerprint), not the globs naming them
    paths: Annotated[list[str], OPERATIONAL] = Field(min_length=1,
                                                     description="globs of input files")
    format: Literal["auto", "jsonl", "parquet", "warc", "wet", "html", "text", "hf"] = Field(
        "auto", description="auto: by extension (.jsonl/.json/.ndjson [.gz/.zst], .parquet, "
        ".warc[.gz], .warc.wet.gz, .arrow) or, for a folder, hf (has dataset_info.json or "
        "state.json) else its .html/.htm/.txt files; html / text: only those files")
    fields: dict[str, str] = Field(
        default_factory=dict, description="contract column -> input field, e.g. {text: content}")

    @field_validator("fields")
    @classmethod
    def _known_columns(cls, v: dict[str, str]) -> dict[str, str]:
        known = {"id", "text", "source", "url", "fetched_at", "lang", "lang_score"}
        bad = sorted(set(v) - known)
        if bad:
            raise ValueError(f"unknown contract column(s) {bad}; known: {sorted(known)}")
        return v


class IngestConfig(Strict):
    shard_max_bytes: int = Field(128 * 2**20, gt=0, description="text bytes per output shard")
    row_group_bytes: int = Field(32 * 2**20, gt=0, description="text bytes per Parquet row group")
    max_doc_chars: int = Field(1_000_000, gt=0, description="longer documents are rejected")
    min_doc_chars: int = Field(1, ge=0, description="shorter documents are rejected")
    incremental: bool = Field(False, description="take only input files (by content hash) "
                              "this recipe has not consumed in a completed run: deltas")
    max_line_bytes: int = Field(16 * 2**20, gt=0, description="longer JSONL lines and WET / "
                                ".txt records are skipped unread (quarantined / rejected)")
    normalize: bool = Field(True, description="ftfy mojibake repair, control characters, "
                            "\\r\\n -> \\n, trailing spaces")
    extractor: Literal["trafilatura", "resiliparse"] = Field(
        "trafilatura", description="HTML -> text: trafilatura (precise) or resiliparse "
        "(~20x faster)")
    max_html_bytes: int = Field(4 * 2**20, gt=0, description="larger pages are rejected "
                                "unparsed (ingest.html_too_large)")
    max_html_depth: int = Field(1000, gt=0, description="deeper tag nesting is rejected "
                                "unparsed (ingest.html_too_deep)")
    lang_id: Literal["off", "missing", "always"] = Field(
        "missing", description="fastText lid.176 language id: for documents without a lang, "
        "for all, or never")
    min_lang_score: float = Field(0.0, ge=0.0, le=1.0, description="documents with a lower "
                                  "lang_score are rejected (ingest.lang_score)")
    languages: list[str] | None = Field(None, min_length=1, description="allow-list of "
                                        "language codes, e.g. [en, fr]; others are rejected "
                                        "(ingest.language)")


class FilterStageConfig(Strict):
    # filter name (tasks/filters/base.py REGISTRY) -> its parameters; applied in this order
    filters: dict[str, SerializeAsAny[FilterConfig]] = Field(
        default_factory=lambda: {"gopher_quality": {}}, validate_default=True,
        description="filter name -> parameters, applied in this order (sections below)")
    exact_dedup: ExactDedupConfig | None = Field(
        default_factory=ExactDedupConfig, description="null turns exact dedup off")
    minhash_dedup: MinHashConfig | None = Field(
        None, description="near-duplicate dedup (MinHash-LSH); null = off")
    url_dedup: UrlDedupConfig | None = Field(
        None, description="one document per normalised URL (docs without a URL pass); "
        "null = off")
    dedup_index: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$",
        description="name of a persistent dedup index shared across runs: documents "
        "already kept by an earlier run into it are dropped (*.seen_before), and this run's "
        "kept documents are added (docs/filters.md); null = dedup within the run only")
    corpus: dict[str, SerializeAsAny[CorpusRuleConfig]] = Field(
        default_factory=dict, description="more corpus rules, applied after the dedup rules in "
        "this order: a registered name (top_k) or an import path package.module[:attr] -> "
        "parameters (docs/architecture.md)")

    @field_validator("filters", "corpus", mode="before")
    @classmethod
    def _build_entries(cls, v: Any, info: ValidationInfo) -> dict[str, Any]:
        what, get, base = (("filter", get_filter, FilterConfig) if info.field_name == "filters"
                           else ("corpus rule", get_rule, CorpusRuleConfig))
        if not isinstance(v, dict):
            raise ValueError(f"expected a mapping of {what} name -> parameters")
        return {name: _build(get, name, params, base) for name, params in v.items()}

    def corpus_rules(self) -> dict[str, Any]:
        """Every corpus rule in decision order: exact, URL, MinHash dedup, then ``corpus``."""
        out: dict[str, Any] = {}
        for name in ("exact_dedup", "url_dedup", "minhash_dedup"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return {**out, **self.corpus}


def _build(get: Any, name: str, params: Any, base: type[BaseModel]) -> Any:
    """A filter's or corpus rule's Config from its recipe entry; errors name the entry."""
    try:
        module = get(name)
    except KeyError as e:
        raise ValueError(str(e.args[0])) from None
    if isinstance(params, base):
        return params
    try:
        return module.Config(**(params or {}))
    except ValidationError as e:
        raise ValueError(f"{name}: {_short(e)}") from None


class TokenizeConfig(Strict):
    vocab_size: int = Field(8192, ge=300, le=2**20, description="BPE vocabulary size")
    min_frequency: int = Field(2, ge=1, description="BPE: min pair count to merge")
    seq_len: int = Field(512, ge=8, description="tokens per packed training row")
    heldout_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="by hash of the doc id")
    tokenizer_train_bytes: int = Field(64 * 2**20, gt=0, description="text used to train BPE")
    tokenizer: Annotated[str | None, BY_CONTENT] = Field(
        None, description="path of a tokenizer.json (it needs the end-of-text token) to use "
        "instead of training one; with train.init_from the init run's tokenizer is used")


class EvaluateConfig(Strict):
    batch_size: int = Field(8, ge=1, description="windows scored per forward pass")
    tasks: list[Literal["next_sentence", "final_word", "cloze"]] = Field(
        default_factory=lambda: ["next_sentence", "final_word"],
        description="multiple-choice tasks built from held-out text (docs/evaluation.md)")
    max_items: int = Field(500, ge=1, description="items per multiple-choice task")
    seed: int = Field(0, description="which sentence/word an item asks about; distractors")
    max_docs: int | None = Field(None, ge=1, description="cap on held-out docs scored")
    heldout: Literal["own", "raw"] = Field(
        "own", description="own: this recipe's held-out split (after rewrite and filter); "
        "raw: the held-out split of the ingested documents, so recipes that differ after "
        "ingest (rewriting, filters, noise) are scored on the very same text")
    checkpoints: int = Field(
        0, ge=0, description="also score the last n resumable checkpoints (train."
        "checkpoint_every, keep_checkpoints >= n): the checkpoint noise of Signal and Noise")
    average_last: int = Field(
        0, ge=0, description="score the mean weights of the last k resumable checkpoints "
        "instead of the final checkpoint (no retraining; 0 or 1 = off)")


def _train_config_cls() -> type[BaseModel]:
    from tasks.train import TrainConfig  # torch-free import (pydantic model only)

    return TrainConfig


class ExtraStage(Strict):
    """A stage of your own (docs/adding-a-stage.md): a ``tasks.stage.Stage`` subclass by import
    path, run after a named stage; ``with`` holds its parameters (its ``Config`` model)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    use: str = Field(description="package.module:Class of a Stage subclass")
    after: str = Field(description="the stage it runs after, e.g. filter")
    params: dict[str, Any] = Field(default_factory=dict, alias="with",
                                   description="its parameters, validated by its Config")

    @model_validator(mode="after")
    def _loads(self) -> ExtraStage:
        self.build()  # an unknown class or a bad parameter is a recipe error
        return self

    def build(self) -> Any:
        from tasks.stage import Stage, load_object

        cls = load_object(self.use)
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise ValueError(f"{self.use} is not a tasks.stage.Stage subclass")
        config = getattr(cls, "Config", None)
        if config is None:
            return cls(self.params or None)
        try:
            return cls(config(**self.params))
        except ValidationError as e:
            raise ValueError(f"{self.use}: {_short(e)}") from None


class StagesConfig(Strict):
    """The stages in order; ``rewrite: null`` turns rewriting off."""

    ingest: IngestConfig = Field(default_factory=IngestConfig)
    rewrite: RewriteConfig | None = None
    filter: FilterStageConfig = Field(default_factory=FilterStageConfig)
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    train: dict[str, Any] = Field(default_factory=dict)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    extra: list[ExtraStage] = Field(default_factory=list, description="stages of your own, "
                                    "each after a named stage (docs/adding-a-stage.md)")

    @field_validator("train", mode="after")
    @classmethod
    def _check_train(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            return _train_config_cls()(**v).model_dump()
        except ValidationError as e:
            raise ValueError(_short(e)) from None

    @model_validator(mode="after")
    def _evaluate_needs_checkpoints(self) -> StagesConfig:
        avg = self.evaluate.average_last
        want = max(self.evaluate.checkpoints, avg if avg > 1 else 0)
        t = self.train
        if want > 0 and (not t.get("checkpoint_every") or t.get("keep_checkpoints", 2) < want):
            raise ValueError(f"evaluate scores the last {want} checkpoints: set train."
                             f"checkpoint_every > 0 and train.keep_checkpoints >= {want}")
        return self


class ContractsConfig(Strict):
    """Data contracts (great-expectations) checked on each stage's output before training."""

    enabled: bool = Field(True, description="run the gates; a violation fails the run before "
                          "training (docs/operations.md)")
    min_text_chars: int = Field(1, ge=0, description="shorter kept documents break the contract")
    max_text_chars: int | None = Field(
        None, gt=0, description="longer kept documents break the contract; null = "
        "stages.ingest.max_doc_chars")


class RefreshExport(Strict):
    """`refresh.export`: where and how a promoted refresh run is exported (docs/export.md)."""

    to: str = Field(min_length=1, description="export folder; a relative path is under the "
                    "data root; each promoted run replaces the previous export there")
    format: Literal["parquet", "jsonl", "megatron", "nanotron"] = Field(
        "parquet", description="export format")


class RefreshConfig(Strict):
    """`datamill refresh` / the datamill-refresh flow: when a refreshed model is promoted."""

    promote_if: Literal["not_worse", "better"] = Field(
        "not_worse", description="promote the refreshed model unless a deciding metric is "
        "worse than the promoted model's, or only when one is better and none worse")
    metrics: list[str] = Field(
        default_factory=lambda: ["heldout/bpb"], min_length=1,
        description="TASK/METRIC rows of the comparison that decide, e.g. heldout/bpb, "
        "next_sentence/acc")
    dedup_index: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]+$", description="persistent dedup index the refreshes "
        "share; null = stages.filter.dedup_index, else refresh-<recipe name>")
    replay: float | None = Field(
        None, ge=0, lt=1, description="replay share when continuing the promoted model; null "
        "= stages.train.replay")
    boot: int = Field(2000, ge=100, description="bootstrap resamples of the comparison")
    export: RefreshExport | None = Field(
        None, description="{to: DIR, format: parquet, jsonl, megatron or nanotron}: after "
        "a refresh whose run is promoted, export it there (docs/export.md); null = no export")


class Recipe(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="recipe name (catalog, UI)")
    data_root: str = Field(".datamill", description="outputs and catalog; overridden by "
                           "--data-root or $DATAMILL_DATA_ROOT")
    input: InputConfig
    stages: StagesConfig = Field(default_factory=StagesConfig)
    contracts: ContractsConfig = Field(default_factory=ContractsConfig,
                                       description="data contracts checked before training")
    refresh: RefreshConfig = Field(default_factory=RefreshConfig,
                                   description="promotion rule of `datamill refresh`")

    def train_config(self) -> Any:
        return _train_config_cls()(**self.stages.train)


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and key."""


def _short(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise RecipeError(f"{p}: not valid YAML: {e}") from None
    return parse_recipe(raw, where=str(p))


def parse_recipe(raw: Any, where: str = "recipe") -> Recipe:
    if not isinstance(raw, dict):
        raise RecipeError(f"{where}: expected a mapping at the top level")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as e:
        raise RecipeError(f"{where}: {_short(e)}") from None


def reference_markdown() -> str:
    """The recipe reference (docs/recipes.md), generated from the models (tasks/recipe_doc.py)."""
    from tasks.recipe_doc import reference_markdown as ref

    return ref()


if __name__ == "__main__":
    print(reference_markdown())
