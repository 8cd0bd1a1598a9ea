"""Edit steps (C4 line edits, PII redaction) and the user-supplied blocklists."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from filterkit import sample_records, table, write_blocklists
from pydantic import ValidationError

from tasks.filter import first_failure, score_table
from tasks.filters import c4, c4_lines, gopher, pii, url_blocklist, word_blocklist
from tasks.filters.base import get_filter
from tasks.recipe import parse_recipe

PROSE = ("The old lighthouse stands at the edge of the northern cliffs, where the sea breaks "
         "against dark rocks.")


# --------------------------------------------------------------------------- c4_lines


def test_c4_lines_removes_exactly_the_lines_c4_flags() -> None:
    text = "\n".join([
        PROSE,
        "Home | About | Contact",                        # no terminal punctuation
        "Too short.",                                    # < 3 words
        "Please enable JavaScript to view this page.",   # javascript
        "Read our privacy policy before you sign up.",   # policy
        "Wait for it...",                                # ellipsis
        "Einstein was born in Ulm.[1] He moved later.[citation needed]",
        "",
        PROSE,
    ])
    t = table([text])
    edited, stats = c4_lines.edit(t, c4_lines.Config())
    assert edited.to_pylist() == [
        f"{PROSE}\nEinstein was born in Ulm. He moved later.\n{PROSE}"]
    assert stats.to_pylist() == [{"c4_lines_removed": 5, "c4_lines_total": 8}]
    # the edit and c4_quality's scores agree on what would be removed
    assert c4.score(t, c4.Config()).column("c4_quality_lines_flagged").to_pylist() == [5]


def test_c4_lines_fineweb_setting_keeps_unpunctuated_lines_and_rejects_empty_docs() -> None:
    t = table(["A heading without a full stop\nAnother line here too", "Menu\nLogin", "",
               "ナビゲーション\n本文です。"], ["en", "en", "en", "ja"])
    cfg = c4_lines.Config(filter_no_terminal_punct=False)
    edited, stats = c4_lines.edit(t, cfg)
    assert edited.to_pylist()[0] == "A heading without a full stop\nAnother line here too"
    assert edited.to_pylist()[1] == ""  # both lines under 3 words
    # no-space language: the word-count rule is off, the punctuation rule still applies
    assert edited.to_pylist()[3] == "ナビゲーション\n本文です。"
    assert c4_lines.edit(t.slice(3), c4_lines.Config())[0].to_pylist() == ["本文です。"]
    fails = c4_lines.rules(stats, cfg)["c4_lines.all_removed"].to_pylist()
    assert fails == [False, True, True, False]
    assert c4_lines.rules(stats, c4_lines.Config(filter_no_terminal_punct=False,
                                                 reject_empty=False))[
        "c4_lines.all_removed"].null_count == 4


def test_edit_steps_change_what_later_filters_score() -> None:
    """Order matters: the gopher filter after c4_lines sees the edited text."""
    nav = "\n".join(["Home", "News", "Sport", "Weather", "Contact"] * 8)
    text = nav + "\n" + " ".join([PROSE] * 6)
    filters = {"c4_lines": c4_lines.Config(), "gopher_quality": gopher.Config()}
    out = score_table(table([text]), filters, None)
    assert out.column("text").to_pylist() == [" ".join([PROSE] * 6)]
    assert out.column("c4_lines_removed").to_pylist() == [40]
    before = score_table(table([text]), {"gopher_quality": gopher.Config()}, None)
    assert (out.column("gopher_quality_n_words").to_pylist()[0]
            < before.column("gopher_quality_n_words").to_pylist()[0])


# --------------------------------------------------------------------------- pii


def test_pii_redacts_emails_ips_and_phones_and_counts_them() -> None:
    t = table([
        "Write to jane.roe@mail.example.org or j@x.io today.",
        "The server at 192.168.10.254 and 2001:db8:85a3:0:0:8a2e:370:7334 answered.",
        "Call (555) 123-4567 or 555-987-6543, abroad +44 20 7946 0958.",
        "In 1999 2000 and 2001 we sold 3.5 million units on 2020-05-12; see page 12.",
    ])
    edited, stats = pii.edit(t, pii.Config())
    assert edited.to_pylist() == [
        "Write to <EMAIL> or <EMAIL> today.",
        "The server at <IP> and <IP> answered.",
        "Call <PHONE> or <PHONE>, abroad <PHONE>.",
        "In 1999 2000 and 2001 we sold 3.5 million units on 2020-05-12; see page 12.",
    ]
    assert [tuple(r.values()) for r in stats.to_pylist()] == [
        (2, 0, 0), (0, 2, 0), (0, 0, 3), (0, 0, 0)]
    assert pii.rules(stats, pii.Config()) == {}  # redaction never rejects


def test_pii_switches_and_placeholders() -> None:
    t = table(["mail a@b.com from 10.0.0.1"])
    edited, stats = pii.edit(t, pii.Config(ips=False, email_placeholder="[email]"))
    assert edited.to_pylist() == ["mail [email] from 10.0.0.1"]
    assert stats.to_pylist() == [{"pii_emails": 1, "pii_ips": 0, "pii_phones": 0}]
    assert pii.Config(phone_placeholder="X").score_params()["phone_placeholder"] == "X"


def test_pii_on_the_sample_keeps_every_document_and_its_length_close() -> None:
    recs = sample_records()[:400]
    t = table([r["text"] for r in recs], [r.get("lang") for r in recs])
    edited, stats = pii.edit(t, pii.Config())
    assert len(edited) == len(recs) and edited.null_count == 0
    changed = sum(a != b for a, b in zip(edited.to_pylist(), t.column("text").to_pylist(),
                                         strict=True))
    total = sum(sum(r.values()) for r in stats.to_pylist())
    assert changed <= total  # a document changes only where something was counted


# --------------------------------------------------------------------------- blocklists


@pytest.fixture
def lists(tmp_path: Path) -> tuple[Path, Path]:
    return write_blocklists(tmp_path)


def test_url_blocklist_matches_hosts_and_parent_domains(lists: tuple[Path, Path]) -> None:
    urls = ["https://ads.example.com/x", "http://bad.org:8080/", "https://notexample.com/",
            None, "www.example.com", "https://good.net/example.com", "not a url at all"]
    t = pa.table({"text": ["t"] * len(urls), "url": pa.array(urls, pa.string())})
    cfg = url_blocklist.Config(path=str(lists[0]))
    got = url_blocklist.score(t, cfg).column("url_blocklist_blocked").to_pylist()
    assert got == [True, True, False, None, True, False, False]
    reason, counts = first_failure(url_blocklist.score(t, cfg), {"url_blocklist": cfg})
    assert list(reason) == ["url_blocklist.blocked"] * 2 + ["", "", "url_blocklist.blocked",
                                                            "", ""]
    assert counts["url_blocklist.blocked"] == {"alone": 3, "first": 3}


def test_word_blocklist_whole_words_any_script(lists: tuple[Path, Path]) -> None:
    t = table(["Darn it.", "a foo bar b", "darned good", "café darn!", "¡Maldito sea!",
               "xmaldito", "这是禁止词。", "Darn, darn, DARN."],
              ["en", "en", "en", "fr", "es", "es", "zh", "en"])
    cfg = word_blocklist.Config(path=str(lists[1]))
    hits = word_blocklist.score(t, cfg).column("word_blocklist_hits").to_pylist()
    assert hits[:6] == [1, 1, 0, 1, 1, 0]
    assert hits[6] == 0  # no word boundaries in Chinese: needs whole_words: false
    assert hits[7] >= 2
    loose = word_blocklist.Config(path=str(lists[1]), whole_words=False)
    assert word_blocklist.score(t, loose).column("word_blocklist_hits").to_pylist()[6] == 1
    strict = word_blocklist.Config(path=str(lists[1]), min_hits=2)
    fails = word_blocklist.rules(word_blocklist.score(t, strict), strict)
    assert fails["word_blocklist.hits"].to_pylist() == [False] * 7 + [True]


def test_blocklist_scores_follow_the_file_content(lists: tuple[Path, Path]) -> None:
    cfg = url_blocklist.Config(path=str(lists[0]))
    before = cfg.score_params()
    lists[0].write_text("other.org\n")
    assert url_blocklist.Config(path=str(lists[0])).score_params() != before
    with pytest.raises(ValidationError, match="no such file"):
        url_blocklist.Config(path=str(lists[0]) + ".missing")


def test_recipe_names_edit_steps_and_blocklists(lists: tuple[Path, Path]) -> None:
    r = parse_recipe({"name": "r", "input": {"paths": ["x.jsonl"]}, "stages": {"filter": {
        "filters": {"pii": {}, "c4_lines": {"filter_no_terminal_punct": False},
                    "url_blocklist": {"path": str(lists[0])},
                    "word_blocklist": {"path": str(lists[1]), "min_hits": 2},
                    "c4_quality": {}},
        "url_dedup": {}, "dedup_index": "web"}}})
    f = r.stages.filter
    assert list(f.filters) == ["pii", "c4_lines", "url_blocklist", "word_blocklist",
                               "c4_quality"]
    assert get_filter("c4_lines") is c4_lines and f.dedup_index == "web"
    assert f.url_dedup is not None and f.url_dedup.drop_query is False
