"""The recipe's ``stages.rewrite`` section: the noise lab and the LLM backends' settings
(split from tasks/recipe.py, which re-exports it)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tasks.identity import OPERATIONAL, ByContent, OpCount, OpPrice, OpSeconds, OpText


def _prompt_digest(prompt: str) -> str:
    from tasks.prompts import load_prompt

    try:
        return load_prompt(prompt).digest()
    except ValueError:  # only LLM backends read the prompt (and validate it)
        return f"unread:{prompt}"


BY_PROMPT = ByContent(_prompt_digest)  # a built-in prompt's text or a prompt file's content


class RewriteConfig(BaseModel):
    """``identity`` copies text; ``noise`` is the noise lab (tasks/noise.py): it corrupts a
    fraction of documents on purpose and marks them in a ``noise`` column, to test that the
    evaluation detects a planted effect and to measure filters. ``openai`` (any
    OpenAI-compatible server), ``local`` (models on Ray actors) and ``embedded`` (SmolLM2-135M
    on llama.cpp, only to exercise the pipeline) rewrite with an LLM: originals are kept and
    rewrites added with provenance (docs/rewriting.md)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["identity", "noise", "openai", "local", "embedded"] = Field(
        "identity", description="the rewriting backend")
    fraction: float = Field(0.5, ge=0, le=1, description="noise: share of documents noised")
    intensity: float = Field(0.1, ge=0, le=1, description="noise: per-word/per-line probability")
    kinds: list[Literal["typos", "word_drop", "boilerplate", "entity_swap"]] = Field(
        default_factory=lambda: ["typos", "word_drop", "boilerplate", "entity_swap"],
        description="noise: static kinds and the dynamic entity_swap")
    seed: int = Field(0, description="noise: which documents, which errors")
    # --- LLM backends ---
    prompt: Annotated[str, BY_PROMPT] = Field(
        "wrap_wikipedia", description="LLM: a built-in prompt (wrap_easy, "
        "wrap_wikipedia, wrap_hard, wrap_qa, nemotron_wikipedia, "
        "nemotron_diverse_qa, nemotron_distill, nemotron_extract_knowledge, "
        "nemotron_knowledge_list, rewire, nemotron_math_clean), a prompt file, or a routing "
        "by quality bucket (nemotron_cc_routed or a routes file; docs/rewriting.md)")
    select: Literal["all", "rejected"] = Field(
        "all", description="LLM: rewrite all documents here, or (REWIRE) recycle the "
        "documents the filter rejects, after the filter: rewrites that pass its rules join "
        "the kept documents")
    recycle_rules: list[str] | None = Field(
        None, description="select=rejected: reject reasons (or filter names) to recycle; "
        "null = every rule except the built-in corpus rules (dedup, top_k)")
    sample_fraction: float = Field(1.0, ge=0, le=1, description="LLM: a random share of the "
                                   "selected documents, by a hash of (sample_seed, id)")
    sample_seed: int = Field(0, description="LLM: which documents sample_fraction picks")
    chunk_tokens: int | None = Field(None, ge=16, description="LLM: token budget per request "
                                     "(estimated); null = the prompt's (WRAP 300)")
    base_url: OpText = Field(None, description="openai: e.g. http://127.0.0.1:8000/v1")
    api: Literal["chat", "completions"] = Field("chat", description="LLM: /v1/chat/completions "
                                                "or /v1/completions")
    model: str | None = Field(None, description="openai: served model name; local: a path or "
                              "Hugging Face id; embedded: ignored")
    api_key_env: OpText = Field(None, description="openai: environment variable holding the "
                                "API key (the key itself never goes in a recipe)")
    api_key_secret: OpText = Field(None, description="openai: name of a Prefect Secret block "
                                   "holding the API key")
    temperature: float = Field(0.7, ge=0, le=2, description="LLM sampling")
    top_p: float = Field(0.9, gt=0, le=1, description="LLM sampling")
    max_tokens: int = Field(1024, ge=1, description="LLM: max generated tokens per request")
    sampling_seed: int | None = Field(None, description="LLM: sampling seed sent to the server")
    stop: list[str] = Field(default_factory=list, description="LLM: stop strings")
    max_concurrency: OpCount = Field(8, le=1024, description="openai/embedded: requests in "
                                     "flight")
    timeout_s: OpSeconds = Field(600.0, description="openai: read timeout per request")
    max_retries: Annotated[int, OPERATIONAL] = Field(
        8, ge=0, description="openai: retries of one request while the server answers others "
        "(outages wait on the breaker instead)")
    backoff_base_s: OpSeconds = Field(0.5, description="openai: first retry waits up to this")
    backoff_cap_s: OpSeconds = Field(30.0, description="openai: longest retry wait")
    breaker_threshold: OpCount = Field(5, description="openai: consecutive failures that open "
                                       "the circuit breaker (pause all requests)")
    breaker_cooldown_s: OpSeconds = Field(2.0, description="openai: pause before a probe "
                                          "request; doubles while the probe fails (max 60 s)")
    max_outage_s: OpSeconds = Field(3600.0, description="openai: an outage longer than this "
                                    "fails the stage (a re-run resumes from the cache)")
    local_actors: OpCount = Field(1, description="local: model actors (one GPU each)")
    local_batch_size: OpCount = Field(8, description="local: requests per generate call")
    local_engine: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="local: vLLM when installed, else transformers")
    mix_ratio: float | None = Field(1.0, ge=0, description="LLM: at least this many real "
                                    "documents per synthetic one (WRAP 1:1); excess rewrites "
                                    "are rejected (rewrite.mix_ratio); null = keep all")
    keep_top_percent: float | None = Field(None, gt=0, le=100, description="LLM post-filter: "
                                           "keep the top k % of rewrites by quality_score")
    quality_score: str = Field("gopher_quality.alpha_words_frac", description="post-filter: "
                               "<filter>.<stat>, a registry filter's score column; higher is "
                               "better")
    price_per_m_input: OpPrice = Field(0.0, description="LLM: price per million prompt tokens, "
                                       "for the cost estimate")
    price_per_m_output: OpPrice = Field(0.0, description="LLM: price per million generated "
                                        "tokens")

    @property
    def is_llm(self) -> bool:
        return self.backend in ("openai", "local", "embedded")

    @model_validator(mode="after")
    def _check_llm(self) -> RewriteConfig:
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("backend openai needs base_url and model")
        if self.backend == "local" and not self.model:
            raise ValueError("backend local needs model (a path or Hugging Face id)")
        if self.is_llm:
            from tasks.prompts import load_prompt

            load_prompt(self.prompt)  # an unknown name or a bad file is a recipe error
        return self
