"""Rating prompts (an LLM scores a document; it does not rewrite it) and their reply parsers.

- ``FINEWEB_EDU``: the FineWeb-Edu annotation prompt (Penedo et al. 2024, "The FineWeb
  Datasets", appendix; the prompt published with ``fineweb-edu-llama3-annotations``): an
  additive 0-5 educational-value score, the reply ending in ``Educational score: <points>``.
- ``DATAMAN``: DataMan's rating task (Peng et al. 2025, "DataMan: Data Manager for
  Pre-training Large Language Models"): the 13 named quality criteria and the overall score
  (14 ratings, 1-5, in the order of the released code's ``METRIC_LIST``) and one of its 15
  domains (letters A-O as in the released code's ``CATEGORY_DICT_EN``). The paper's own
  prompt text is not reproduced here; this prompt names the same criteria, scale and domains
  and asks for a reply the parser reads. The parser also reads the released DataMan rater's
  terse reply (the domain letter on the first line, then one number per line).
"""

from __future__ import annotations

import hashlib
import re

FINEWEB_EDU = """Below is an extract from a web page. Evaluate whether the page has a high educational value and could be useful in an educational setting for teaching from primary school to grade school levels using the additive 5-point scoring system described below. Points are accumulated based on the satisfaction of each criterion:

- Add 1 point if the extract provides some basic information relevant to educational topics, even if it includes some irrelevant or non-academic content like advertisements and promotional material.
- Add another point if the extract addresses certain elements pertinent to education but does not align closely with educational standards. It might mix educational content with non-educational material, offering a superficial overview of potentially useful topics, or presenting information in a disorganized manner and incoherent writing style.
- Award a third point if the extract is appropriate for educational use and introduces key concepts relevant to school curricula. It is coherent though it may not be comprehensive or could include some extraneous information. It may resemble an introductory section of a textbook or a basic tutorial that is suitable for learning but has notable limitations like treating concepts that are too complex for grade school students.
- Grant a fourth point if the extract highly relevant and beneficial for educational purposes for a level not higher than grade school, exhibiting a clear and consistent writing style. It could be similar to a chapter from a textbook or a tutorial, offering substantial educational content, including exercises and solutions, with minimal irrelevant information, and the concepts aren't too advanced for grade school students. The content is coherent, focused, and valuable for structured learning.
- Bestow a fifth point if the extract is outstanding in its educational value, perfectly suited for teaching either at primary school or grade school. It follows detailed reasoning, the writing style is easy to follow and offers profound and thorough insights into the subject matter, devoid of any non-educational or complex content.

The extract: {example}

After examining the extract:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Educational score: <total points>\""""  # noqa: E501

DATAMAN_CRITERIA = ("Accuracy", "Coherence", "Language Consistency", "Semantic Density",
                    "Knowledge Novelty", "Topic Focus", "Creativity", "Professionalism",
                    "Style Consistency", "Grammatical Diversity", "Structural Standardization",
                    "Originality", "Sensitivity")
OVERALL = "Overall Score"
DATAMAN_DOMAINS = {"A": "Medicine", "B": "Finance", "C": "Law", "D": "Education",
                   "E": "Technology", "F": "Entertainment", "G": "Mathematics", "H": "Coding",
                   "I": "Government", "J": "Culture", "K": "Transportation",
                   "L": "Retail E-commerce", "M": "Telecommunication", "N": "Agriculture",
                   "O": "Other"}

_LIST = "\n".join(f"[{i}] {name}" for i, name in
                  enumerate((*DATAMAN_CRITERIA, OVERALL), start=1))
_DOMAINS = ", ".join(f"[{k}] {v}" for k, v in DATAMAN_DOMAINS.items())
DATAMAN = f"""Please rate the following text for use as language-model pre-training data. Rate it on each criterion below from 1 (very poor) to 5 (excellent); higher is always better (for Sensitivity: 5 = no harmful, private or offensive content). The overall score sums up how much the text would help a language model learn.

{_LIST}

Then choose the one domain the text belongs to: {_DOMAINS}.

Text:
{{example}}

Reply with one line per criterion in the form "[n] Criterion: score/5", then a last line "Domain Type: <letter>"."""  # noqa: E501


def render(template: str, text: str) -> str:
    """The prompt with the document in place (``str.replace``: braces in a text are safe)."""
    return template.replace("{example}", text)


def digest(template: str) -> str:
    return hashlib.sha256(template.encode("utf-8")).hexdigest()[:16]


_EDU = re.compile(r"educational\s+score\s*[:：]\s*[*\"'“”]*\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


def parse_edu(reply: str | None) -> int | None:
    """The score of a FineWeb-Edu reply (its last ``Educational score: N``), 0-5; None when
    the reply has none or it is out of range."""
    if not reply:
        return None
    found = _EDU.findall(reply)
    if not found:
        return None
    v = float(found[-1])
    return int(v) if v == int(v) and 0 <= v <= 5 else None


def _label(name: str) -> re.Pattern[str]:
    words = r"[\s_-]*".join(re.escape(w) for w in name.split())
    return re.compile(rf"{words}\**\s*[:：]?\s*\**\s*\(?\s*(\d+(?:\.\d+)?)\s*(?:/\s*5)?",
                      re.IGNORECASE)


_LABELS = {name: _label(name) for name in (*DATAMAN_CRITERIA, OVERALL)}
_DOMAIN = re.compile(r"domain(?:\s+type)?\s*\**\s*[:：]\s*\**\s*\[?\s*([A-O])\b", re.IGNORECASE)
_NUM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")


def parse_dataman(reply: str | None) -> tuple[dict[str, float | None], str | None]:
    """(criterion -> rating 1-5 or None, domain name or None) from a DataMan reply: labelled
    lines (``[1] Accuracy: 4/5`` ... ``Domain Type: E``) or the released rater's terse form
    (domain letter, then the 14 ratings one per line). A rating outside 1-5 is None."""
    names = (*DATAMAN_CRITERIA, OVERALL)
    out: dict[str, float | None] = dict.fromkeys(names)
    if not reply:
        return out, None
    lines = [ln for ln in reply.strip().splitlines() if ln.strip()]
    if lines and lines[0].strip().upper() in DATAMAN_DOMAINS and len(lines) >= 1 + len(names) \
            and all(_NUM.match(ln) for ln in lines[1:1 + len(names)]):
        for name, ln in zip(names, lines[1:1 + len(names)], strict=True):
            out[name] = _rating(ln)
        return out, DATAMAN_DOMAINS[lines[0].strip().upper()]
    for name in names:
        m = _LABELS[name].search(reply)
        out[name] = _rating(m.group(1)) if m else None
    d = _DOMAIN.search(reply)
    return out, DATAMAN_DOMAINS[d.group(1).upper()] if d else None


def _rating(s: str) -> float | None:
    v = float(s.strip())
    return v if 1 <= v <= 5 else None
