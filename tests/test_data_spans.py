"""`<MASK>` markup <-> character spans, and character spans -> per-token span ids."""

from __future__ import annotations

import json
import random

import pytest

from rrpo.data.spans import (
    MaskMarkupError,
    fill_offset_gaps,
    parse_masked,
    span_ids_from_offsets,
    to_masked,
    token_span_ids,
    trim_spans,
)


def texts_of(text, spans):
    return [text[a:b] for a, b in spans]


# ----------------------------------------------------------------------------- parse_masked


def test_parse_masked_on_the_paper_fixture(shared_fixtures):
    records = json.loads((shared_fixtures / "paper_format" / "pairs_masked.json").read_text())
    good = [r for r in records if r["src"] in ("open_ended", "binary_qa", "mcq")]
    assert len(good) == 3
    for rec in good:
        for plain_key, masked_key in (("answer", "answer_masked"), ("pred", "pred_masked")):
            plain, spans = parse_masked(rec[masked_key])
            assert plain == rec[plain_key]
            assert spans  # every good record marks something on both sides
            # the span texts are exactly what the tags enclose, without the markup spaces
            enclosed = [chunk.split("</MASK>")[0].strip() for chunk in rec[masked_key].split("<MASK>")[1:]]
            assert texts_of(plain, spans) == enclosed

    milk = next(r for r in good if r["src"] == "open_ended")
    plain, spans = parse_masked(milk["answer_masked"])
    assert texts_of(plain, spans) == ["a bottle of milk", "pours it into a glass"]

    # the "no difference" record has no tags at all; the mismatching one reduces to another text
    no_diff = next(r for r in records if r["src"] == "no_difference")
    assert parse_masked(no_diff["answer_masked"]) == (no_diff["answer"], [])
    mismatch = next(r for r in records if r["src"] == "masked_text_mismatch")
    assert parse_masked(mismatch["pred_masked"])[0] != mismatch["pred"]


@pytest.mark.parametrize(
    "masked, plain, inside",
    [
        (
            "takes out <MASK> a bottle of milk </MASK> and",
            "takes out a bottle of milk and",
            ["a bottle of milk"],
        ),
        ("<MASK> Yes </MASK>", "Yes", ["Yes"]),  # tags at start and end, paper spacing
        ("<MASK>No</MASK>", "No", ["No"]),  # no spaces at all
        ("(<MASK>B</MASK>) the dog", "(B) the dog", ["B"]),
        ("it is <MASK> red </MASK>.", "it is red.", ["red"]),  # punctuation right after a tag
        ("it is <MASK> red </MASK>, then <MASK> blue </MASK>!", "it is red, then blue!", ["red", "blue"]),
        ("<MASK>  two\tcats </MASK> sit", "two\tcats sit", ["two\tcats"]),  # any whitespace inside tags
        ("a <mask> b </Mask> c", "a b c", ["b"]),  # case-insensitive tags
        ("x <MASK> a </MASK><MASK> b </MASK> y", "x ab y", ["a", "b"]),  # adjacent spans
        ("un <MASK> café ☕ </MASK> 猫", "un café ☕ 猫", ["café ☕"]),  # non-ASCII
        ("no tags here", "no tags here", []),
    ],
)
def test_parse_masked_hand_cases(masked, plain, inside):
    got_plain, spans = parse_masked(masked)
    assert got_plain == plain
    assert texts_of(got_plain, spans) == inside
    assert spans == sorted(spans)


@pytest.mark.parametrize(
    "masked, message",
    [
        ("a <MASK> b", "never closed"),
        ("a </MASK> b", "without a matching"),
        ("<MASK> a <MASK> b </MASK> </MASK>", "nested"),
        ("a <MASK> b </MASK> c </MASK>", "without a matching"),
        ("a <MASK>   </MASK> b", "empty"),
    ],
)
def test_parse_masked_rejects_bad_markup(masked, message):
    with pytest.raises(MaskMarkupError, match=message) as info:
        parse_masked(masked)
    assert info.value.position is not None and 0 <= info.value.position < len(masked)


# ----------------------------------------------------------------------------- to_masked


def test_to_masked_writes_the_paper_spacing():
    text = "He takes out a bottle of milk and pours it."
    a = text.index("a bottle of milk")
    assert to_masked(text, [(a, a + len("a bottle of milk"))]) == (
        "He takes out <MASK> a bottle of milk </MASK> and pours it."
    )


def test_to_masked_parse_masked_round_trip_random():
    rng = random.Random(0)
    alphabet = list("abcdé猫😀 ,.()\t") + ["  "]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, 2 * rng.randint(0, 3))))
        spans = [(a, b) for a, b in zip(cuts[::2], cuts[1::2]) if text[a:b].strip()]
        masked = to_masked(text, spans)
        plain, back = parse_masked(masked)
        assert plain == text
        # exact for spans without edge whitespace; others come back trimmed, same non-space content
        assert back == trim_spans(text, spans)
        assert [text[a:b].strip() for a, b in spans] == texts_of(text, back)


def test_to_masked_errors():
    with pytest.raises(MaskMarkupError, match="already contains"):
        to_masked("a <MASK> b", [(0, 1)])
    with pytest.raises(MaskMarkupError, match="overlaps"):
        to_masked("abcdef", [(0, 3), (2, 4)])
    with pytest.raises(MaskMarkupError, match="inside the text"):
        to_masked("abc", [(1, 9)])
    with pytest.raises(MaskMarkupError, match="only whitespace"):
        to_masked("a   b", [(1, 3)])


def test_trim_spans():
    assert trim_spans(" a red ball ", [(2, 7)]) == [(3, 6)]
    assert trim_spans("abc", [(0, 3)]) == [(0, 3)]


# ----------------------------------------------------------------------------- token span ids


def span_ids_by_bytes(tokenizer, input_ids, text, spans):
    """Independent reference: decode every byte-level token to its raw bytes, lay them end to end
    over the UTF-8 text, and mark a token with span k if its bytes overlap span k's bytes."""
    # GPT-2's reversible byte <-> printable-character table (Radford et al. 2019), written out here
    # so the check does not use the code under test or the tokenizer's offsets.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    char_to_byte = {chr(c): b for b, c in zip(keep, chars)}

    token_bytes = [bytes(char_to_byte[c] for c in tok) for tok in tokenizer.convert_ids_to_tokens(input_ids)]
    assert b"".join(token_bytes) == text.encode("utf-8")
    byte_spans = [(len(text[:a].encode()), len(text[:b].encode())) for a, b in spans]
    ids, pos = [], 0
    for tb in token_bytes:
        s, e = pos, pos + len(tb)
        pos = e
        ids.append(next((k for k, (a, b) in enumerate(byte_spans, 1) if s < b and a < e), 0))
    return ids


SENTENCES = [
    "He takes out a bottle of milk and pours it into a glass.",
    "He takes out an apple and puts it on the table.",
    "The café on the corner serves crème brûlée.",
    "A dog 🐕 jumps over the fence 🎉 twice.",
    "猫がテーブルの上に座っている。",
    "The red ball rolls  under   the chair.",
]


@pytest.fixture(scope="module", params=[False, True], ids=["untrimmed-offsets", "trimmed-offsets"])
def bpe_tokenizer(request):
    """A byte-level BPE tokenizer trained on the sentences above (vocab 300: many words stay split
    into several tokens, and multi-byte characters into single-byte tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # GPT-2 trims whitespace out of offsets; Qwen does not. Both must give the same span ids.
    tok.post_processor = processors.ByteLevel(trim_offsets=request.param)
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    tok.train_from_iterator(SENTENCES * 3, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


@pytest.mark.parametrize(
    "masked",
    [
        "He takes out <MASK> a bottle of milk </MASK> and <MASK> pours it into a glass </MASK>.",
        "The <MASK> café </MASK> on the corner serves <MASK> crème brûlée </MASK>.",
        "A <MASK> dog 🐕 </MASK> jumps over the fence <MASK> 🎉 </MASK> twice.",
        "猫が<MASK>テーブル</MASK>の上に<MASK>座っている</MASK>。",
        "The red ball rolls <MASK> under   the </MASK> chair.",
        "<MASK> He </MASK> takes out an <MASK> a </MASK>pple.",  # a span inside a word
        "Unseen wörds: <MASK> Zürich </MASK> 🦜 ok",
    ],
)
def test_token_span_ids_match_byte_level_reference(bpe_tokenizer, masked):
    text, spans = parse_masked(masked)
    input_ids, span_ids = token_span_ids(bpe_tokenizer, text, spans)
    assert input_ids == bpe_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(span_ids) == len(input_ids)
    assert span_ids == span_ids_by_bytes(bpe_tokenizer, input_ids, text, spans)
    # every span gets at least one token, numbered in order
    assert sorted(set(span_ids) - {0}) == list(range(1, len(spans) + 1))


def test_leading_space_token_counts_as_inside(bpe_tokenizer):
    text = "He takes out a bottle of milk and pours it into the glass."
    tokens = bpe_tokenizer.convert_ids_to_tokens(bpe_tokenizer(text, add_special_tokens=False)["input_ids"])
    # find a learned token that carries a leading space and letters ("Ġthe", "Ġa", ...)
    t = next(i for i, tok in enumerate(tokens) if tok.startswith("Ġ") and len(tok) > 1)
    start = len("".join(tokens[:t])) + 1  # ASCII text: one character per byte; +1 skips the space
    end = start + len(tokens[t]) - 1
    input_ids, span_ids = token_span_ids(bpe_tokenizer, text, [(start, end)])
    assert text[start - 1] == " " and not text[start].isspace()
    assert span_ids[t] == 1
    assert span_ids[:t] == [0] * t  # nothing before it


def test_token_span_ids_needs_a_fast_tokenizer():
    class Slow:
        is_fast = False

    with pytest.raises(TypeError, match="fast tokenizer"):
        token_span_ids(Slow(), "abc", [(0, 1)])


def test_span_ids_from_offsets_and_gap_filling():
    offsets = [(0, 1), (2, 2), (3, 6), (7, 7), (7, 8), (7, 8), (9, 9), (9, 10)]
    # trimmed whitespace tokens get back the character before them
    assert fill_offset_gaps(offsets) == [(0, 1), (1, 2), (2, 6), (6, 7), (7, 8), (7, 8), (8, 9), (9, 10)]
    assert span_ids_from_offsets([(0, 0), (0, 2), (2, 4), (4, 6)], [(1, 3), (4, 5)]) == [0, 1, 1, 2]


def test_token_diff_pairs_the_gaps_between_long_enough_common_runs():
    from rrpo.data.spans import token_diff

    a = [1, 2, 3, 4, 5, 6, 7, 8]
    b = [1, 2, 3, 9, 9, 6, 7, 8]
    assert token_diff(a, b) == [((3, 5), (3, 5))]
    # A common run shorter than min_match_size does not split a difference: [5] alone is not common.
    a2 = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    b2 = [1, 2, 3, 0, 5, 0, 7, 8, 9]
    assert token_diff(a2, b2, min_match_size=3) == [((3, 6), (3, 6))]
    assert token_diff(a2, b2, min_match_size=1) == [((3, 4), (3, 4)), ((5, 6), (5, 6))]
    # An insertion on one side only has no counterpart: no pair (as the paper's diff_lib).
    assert token_diff([1, 2, 3, 4, 5, 6], [1, 2, 3, 7, 4, 5, 6]) == []
    assert token_diff([1, 2, 3], [1, 2, 3]) == []
    # Differences at both ends.
    assert token_diff([0, 1, 2, 3, 9], [8, 1, 2, 3, 7]) == [((0, 1), (0, 1)), ((4, 5), (4, 5))]


def test_token_diff_spans_are_character_spans_of_the_differing_tokens(tmp_path):
    from transformers import AutoTokenizer

    from rrpo.data.spans import token_diff_spans
    from rrpo.models import build_tiny_model

    tok = AutoTokenizer.from_pretrained(build_tiny_model("qwen2-vl", tmp_path / "m"))
    chosen, rejected = "the man pours milk into a glass", "the man pours juice into a glass"
    c, r = token_diff_spans(tok, chosen, rejected)
    assert c and len(c) == len(r)
    assert "milk" in "".join(chosen[a:b] for a, b in c) and "juice" in "".join(rejected[a:b] for a, b in r)
    assert all(not chosen[a:b].startswith(" ") and not chosen[a:b].endswith(" ") for a, b in c)
