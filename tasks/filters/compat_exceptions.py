"""The exceptions of datatrove 0.10.1's English word tokenizer (a blank spaCy English
pipeline), for ``compat: datatrove`` (``compat_words``): chunks of text the tokenizer splits by
a table rather than by its affix rules, each with its tokens.

- contractions, written with ``'`` or ``’``: pronouns with ``'m 'll 'd 've 're 's`` (``I'm``,
  ``they'll``), auxiliaries with ``n't`` (``don't`` -> ``do`` ``n't``, ``can't`` -> ``ca``
  ``n't``, ``won't`` -> ``wo`` ``n't``), the same without the apostrophe (``dont`` -> ``do``
  ``nt``), except where that spells a word (``ill``, ``well``, ``its``, ``were``, ``shed`` ...);
  ``cannot``, ``gonna``, ``gotta``, ``let's``; times (``5pm`` -> ``5`` ``pm``);
- abbreviations kept whole with their full stop (``Dr.``, ``e.g.``, ``Jan.``, ``N.Y.``, single
  lower-case letters ``a.`` ... ``z.``);
- emoticons kept whole (``:)``, ``<3``, ``^_^``) and a few others (``C++``, ``''``).
"""

from __future__ import annotations

Tokens = tuple[str, ...]

_EMOTICONS = r"""
:) :-) :)) :-)) :))) :-))) (: (-: =) (= :] :-] [: [-: [= =] :o) (o: :} :-} 8) 8-) (-8 ;) ;-)
(; (-; :( :-( :(( :-(( :((( :-((( ): )-: =( >:( :') :'-) :'( :'-( :/ :-/ =/ =| :| :-| ]= =[ :1
:P :-P :p :-p :O :-O :o :-o :0 :-0 :() >:o :* :-* :3 :-3 =3 :> :-> :X :-X :x :-x :D :-D ;D
;-D =D xD XD xDD XDD 8D 8-D ^_^ ^__^ ^___^ >.< >.> <.< ._. ;_; -_- -__- v.v V.V v_v V_V o_o
o_O O_o O_O 0_o o_0 0_0 o.O O.o O.O o.o 0.0 o.0 0.o @_@ <3 <33 <333 </3 (^_^) (-_-) (._.)
(>_<) (*_*) (¬_¬) ಠ_ಠ ಠ︵ಠ (ಠ_ಠ) ¯\(ツ)/¯ (╯°□°）╯︵┻━┻ ><(((*>
""".split()

_ABBREVIATIONS = """
Mt. Ak. Ala. Apr. Ariz. Ark. Aug. Calif. Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind.
Jan. Jul. Jun. Kan. Kans. Ky. La. Mar. Mass. Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y.
Neb. Nebr. Nev. Nov. Oct. Okla. Ore. Pa. S.C. Sep. Sept. Tenn. Va. Wash. Wis.
'd a.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e. I.e. I.E. Inc. Jr. Ltd.
Md. Messrs. Mo. Mont. Mr. Mrs. Ms. p.m. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s.
'S 's \u2018S \u2018s and/or w/o 're 'Cause 'cause 'cos 'Cos 'coz 'Coz 'cuz 'Cuz 'bout ma'am Ma'am
o'clock O'clock lovin' Lovin' lovin Lovin havin' Havin' havin Havin doin' Doin' doin Doin goin'
Goin' goin Goin
""".split()

# pronoun/verb contractions the tokenizer leaves whole because the pieces would be real words
_NOT_SPLIT = {"Ill", "ill", "Its", "its", "Hell", "hell", "Shell", "shell", "Shed", "shed",
              "were", "Were", "Well", "well", "Whore", "whore"}


def exceptions() -> dict[str, Tokens]:
    """Every exception: chunk -> its tokens (which join back to the chunk)."""
    exc: dict[str, Tokens] = {}

    def add(*parts: str) -> None:
        exc["".join(parts)] = parts

    for s in (" ", "\t", "\\t", "\n", "\\n", "\u2014", "\u00a0", "'", '\\")', "<space>", "''",
              "C++", *_EMOTICONS):
        add(s)
    for letter in "abcdefghijklmnopqrstuvwxyzäöü":
        add(letter + ".")
    for unit in "cfkCFK":
        add("°", unit, ".")

    english: dict[str, Tokens] = {}

    def eng(*parts: str) -> None:
        english["".join(parts)] = parts

    def both(word: str) -> tuple[str, str]:
        return word, word.title()

    def will_would(w: str) -> None:
        for a, b in (("'ll", "ll"), ("'d", "d")):
            eng(w, a)
            eng(w, b)
            eng(w, a, "'ve")
            eng(w, b, "ve")

    for w in both("i"):
        eng(w, "'m")
        eng(w, "m")
        eng(w, "'m", "a")
        eng(w, "m", "a")
    for pron in ("i", "you", "he", "she", "it", "we", "they"):
        for w in both(pron):
            will_would(w)
    for pron in ("i", "you", "we", "they"):
        for w in both(pron):
            eng(w, "'ve")
            eng(w, "ve")
    for pron in ("you", "we", "they"):
        for w in both(pron):
            eng(w, "'re")
            eng(w, "re")
    for pron in ("he", "she", "it"):
        for w in both(pron):
            eng(w, "'s")
            eng(w, "s")
    singular = {"that", "this"}
    plural = {"these", "those"}
    for word in ("who", "what", "when", "where", "why", "how", "there", *singular, *plural):
        for w in both(word):
            if word not in plural:
                eng(w, "'s")
                eng(w, "s")
            will_would(w)
            if word not in singular:
                for a, b in (("'re", "re"), ("'ve", "ve")):
                    eng(w, a)
                    eng(w, b)
    for verb in ("ca", "could", "do", "does", "did", "had", "may", "might", "must", "need",
                 "ought", "sha", "should", "wo", "would"):
        for w in both(verb):
            eng(w, "n't")
            eng(w, "nt")
            eng(w, "n't", "'ve")
            eng(w, "nt", "ve")
    for verb in ("could", "might", "must", "should", "would"):
        for w in both(verb):
            eng(w, "'ve")
            eng(w, "ve")
    for verb in ("ai", "are", "is", "was", "were", "have", "has", "dare"):
        for w in both(verb):
            eng(w, "n't")
            eng(w, "nt")
    for word in ("doin", "goin", "nothin", "nuthin", "ol", "somethin"):
        for w in both(word):
            eng(w)
            eng(w + "'")
    for word in ("em", "ll", "nuff"):
        eng(word)
        eng("'" + word)
    for hour in range(1, 13):
        for period in ("a.m.", "am", "p.m.", "pm"):
            eng(str(hour), period)
    for parts in (("y'", "all"), ("y", "all"), ("how", "'d", "'y"), ("How", "'d", "'y"),
                  ("not", "'ve"), ("not", "ve"), ("Not", "'ve"), ("Not", "ve"),
                  ("can", "not"), ("Can", "not"), ("gon", "na"), ("Gon", "na"),
                  ("got", "ta"), ("Got", "ta"), ("let", "'s"), ("Let", "'s"),
                  ("c'm", "on"), ("C'm", "on")):
        eng(*parts)
    for word in _ABBREVIATIONS:
        eng(word)
    for word in _NOT_SPLIT:
        english.pop(word, None)
    exc.update(english)
    # every exception with a straight apostrophe also exists with a typographic one
    for key, parts in list(exc.items()):
        if "'" in key:
            exc[key.replace("'", "\u2019")] = tuple(p.replace("'", "\u2019") for p in parts)
    return exc
