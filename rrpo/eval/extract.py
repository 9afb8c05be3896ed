"""Reading an answer out of a model's free-text reply.

Two kinds of functions live here:

* The general, robust extractors `mcq_letter(prediction, options)` and `yes_no(prediction)`, defined in
  `rrpo.data.answers` (shared with the self-alignment judge) and re-exported here.
* Each benchmark's *official* rule, and the rule the RRPO paper's evaluation scripts used
  (github.com/pritamqu/RRPO, `eval/`), as separate small functions, so a score can be reproduced
  exactly. docs/scoring.md lists where the two differ.

Option letters are upper-case "A", "B", ...; option i (0-based) has letter chr(ord("A") + i).
"""

from __future__ import annotations

import re

# The general extractors live in rrpo.data.answers (shared with the self-alignment judge); re-exported.
from rrpo.data.answers import LETTERS, mcq_letter, option_text, yes_no  # noqa: E402,F401

# ---------------------------------------------------------------------------------------------
# Benchmark-specific official rules.
# ---------------------------------------------------------------------------------------------


def videohallucer_hit(prediction: str, gold: str) -> bool:
    """VideoHallucer (official and paper): the gold word appears as a whole word, any case.

    `re.search(r"\\b(" + gold + r")\\b", prediction, re.IGNORECASE)`; so "No, yes" counts as a
    hit for both "yes" and "no" -- the benchmark's own rule, kept as is.
    """
    return re.search(r"\b(" + re.escape(gold) + r")\b", prediction, re.IGNORECASE) is not None


def mvbench_correct(prediction: str, gold_letter: str) -> bool:
    """MVBench / TVBench official `check_ans`: compare the reply's first token with "(B)".

    The official code lower-cases, takes `pred.split(' ')[0]`, drops "." and counts it correct when
    it is a substring of "(b)" or contains "(b)". So "B", "(B)", "B.", "B)" and "(B) text" are
    right, "B, because" and "Answer: B" are wrong. One deliberate difference (docs/scoring.md): a
    first token with no letter ("" or "(") would be a substring of every "(x)" and count as
    correct there; here it is wrong.
    """
    first = prediction.lower().split(" ")[0]
    token = first.replace(".", "")
    gold = f"({gold_letter.lower()})"
    if not re.search(r"[a-z]", token):
        return False
    return token in gold or gold in first


def mlvu_letter(prediction: str) -> str:
    """MLVU official: the character before the first ")" when there is one, else the whole reply.

    The result is compared with the gold letter for equality, so "B", "(B) text", "B) text" and
    "The answer is (B)" are read as "B", while "B. text" stays "B. text" (wrong).
    """
    if ")" in prediction:
        i = prediction.index(")")
        return prediction[i - 1 : i]
    return prediction


# The official Video-MME list, verbatim: two commas are missing in the original, so Python joins
# "The best option is" + "The correct option is" (and "Best answer:" + "Best option:") into one
# string each; we keep that so official numbers reproduce.
_VIDEOMME_PREFIXES = [
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",
    "Best answer:Best option:",
]
# The RRPO paper's copy (eval/videomme/calculate.py) adds four prefixes.
_VIDEOMME_PREFIXES_PAPER = _VIDEOMME_PREFIXES + [
    "Answer:",
    "Option:",
    "The correct answer",
    "The correct option",
]


def videomme_letter(prediction: str) -> str | None:
    """Video-MME official `extract_characters_regex`: drop answer prefixes, take the first A-D.

    Case-sensitive: after the prefixes go, the first capital A, B, C or D anywhere wins (so
    "Answer: B" reads "A", the A of "Answer"). None (the official "") when there is none; the
    official scorer leaves such questions out of the denominator.
    """
    s = prediction.strip()
    for prefix in _VIDEOMME_PREFIXES:
        s = s.replace(prefix, "")
    if len(s.split()) > 10 and not re.search("[ABCD]", s):
        return None
    m = re.search(r"[ABCD]", s)
    return m[0] if m else None


def videomme_letter_paper(prediction: str) -> str | None:
    """The RRPO paper's Video-MME extraction: more prefixes dropped, then the first `(?[?[A-D]]?)?.?`."""
    s = prediction.strip()
    for prefix in _VIDEOMME_PREFIXES_PAPER:
        s = s.replace(prefix, "")
    found = re.findall(r"\(?\[?([A-D])\]?\)?\.?", s)
    return found[0].strip("()") if found else None


def paper_letter(prediction: str, *, letters: str = LETTERS) -> str | None:
    """The RRPO paper's `check_ans` (MVBench, TVBench, MLVU, LongVideoBench): first regex match.

    `re.search(r"\\(?\\[?([A-Z])\\]?\\)?\\.?", pred, re.IGNORECASE)` returns the first letter of the
    reply, whatever it is: "The answer is (B)" reads as "T". Returned upper-cased; None if the
    reply has no letter at all (the paper's 'failed').
    """
    m = re.search(r"\(?\[?([A-Z])\]?\)?\.?", prediction, re.IGNORECASE)
    return m.group(1).upper() if m and m.group(1).upper() in letters else None


def first_letter(prediction: str, letters: str) -> str | None:
    """LongVideoBench: the first capital letter of the reply that is one of `letters` (e.g. "ABCDE")."""
    for ch in prediction:
        if ch in letters and ch.isupper():
            return ch
    return None


def tempcompass_mc_rating(prediction: str, answer: str) -> int | None:
    """TempCompass multi-choice official rules (eval_multi-choice.py). 1/0, or None if no rule decides.

    `answer` is the gold option as written in the questions file, e.g. "A. dunking a basketball".
    Rules: exact equality with `answer`; a bare letter A-D; a reply starting with "A." ... "D."
    or "A)" ... "D)" (its label compared with the gold label). The official code first removes
    "</s>" and does not strip whitespace.
    """
    pred = prediction.replace("</s>", "")
    if pred == answer:
        return 1
    if pred in ("A", "B", "C", "D"):
        return int(pred == answer[:1])
    for sep in (".", ")"):
        if any(pred.startswith(f"{c}{sep}") for c in "ABCD"):
            return int(pred.split(sep)[0] == answer[:1])
    return None


def tempcompass_yn_rating(prediction: str, answer: str) -> int | None:
    """TempCompass yes/no official rule (eval_yes_no.py): the lower-cased reply starts with yes / no.

    Note "Not sure" starts with "no" and so reads "no" -- the official rule, kept as is.
    """
    pred = prediction.replace("</s>", "").lower()
    if pred.startswith("yes"):
        return int(answer == "yes")
    if pred.startswith("no"):
        return int(answer == "no")
    return None
