"""Answer extraction and scoring must behave exactly like LLM-Adapters' evaluation code.

Each case states the expected value literally. As a second check, the harness is compared with
small copies of LLM-Adapters' own extraction functions (evaluate.py: extract_answer_number,
extract_answer_letter; commonsense_evaluate.py: extract_answer). In those copies float('inf')
and '' mean "nothing parsed"; the harness returns None instead.
"""
from __future__ import annotations

import math
import re

import pytest

from harness import data, tasks
from harness.errors import ConfigError
from harness.tasks.extract import (answer_options, extract_label, extract_letter, extract_number,
                             number_correct)


# ---- reference: LLM-Adapters' code, copied from the original ---------------------------------

def ref_extract_answer_number(sentence: str) -> float:  # evaluate.py
    sentence = sentence.replace(',', '')
    pred = [s for s in re.findall(r'-?\d+\.?\d*', sentence)]
    if not pred:
        return float('inf')
    return float(pred[-1])


def ref_number_correct(label: str, predict: float) -> bool:  # evaluate.py main loop
    return abs(float(label) - predict) <= 0.001


def ref_extract_answer_letter(sentence: str) -> str:  # evaluate.py
    pred_answers = re.findall(r'A|B|C|D|E', sentence.strip())
    return pred_answers[0] if pred_answers else ''


def ref_extract_label(sentence: str, labels) -> str:  # commonsense_evaluate.py (one branch per set)
    pred_answers = re.findall("|".join(labels), sentence.strip())
    return pred_answers[0] if pred_answers else ''


# The label patterns commonsense_evaluate.py hard-codes for each set.
PAPER_LABELS = {
    "boolq": ("true", "false"),
    "piqa": ("solution1", "solution2"),
    "siqa": ("answer1", "answer2", "answer3", "answer4", "answer5"),
    "arc_easy": ("answer1", "answer2", "answer3", "answer4", "answer5"),
    "arc_challenge": ("answer1", "answer2", "answer3", "answer4", "answer5"),
    "openbookqa": ("answer1", "answer2", "answer3", "answer4", "answer5"),
    "hellaswag": ("ending1", "ending2", "ending3", "ending4"),
    "winogrande": ("option1", "option2"),
}


@pytest.fixture(scope="module")
def arith():
    return tasks.get_family("arithmetic")


@pytest.fixture(scope="module")
def cs():
    return tasks.get_family("commonsense")


# ---- numbers ---------------------------------------------------------------------------------

NUMBER_CASES = [
    ("The answer is 1,080.", 1080.0),  # comma removed; "1080." parses as 1080.0
    ("$1,234.50 total", 1234.5),
    ("It costs -5 dollars", -5.0),
    ("5. The answer is 7", 7.0),  # last number wins
    ("answer is 3.5.\n", 3.5),  # matches "3.5"; the final "." is left over
    ("The answer is 8.0", 8.0),
    ("10 apples and 12 oranges so 22", 22.0),
    ("There are 3-4 of them", -4.0),  # quirk: "3" then "-4"; a range scores its negated end
    ("1e5", 5.0),  # quirk: no scientific notation; "1" and "5"
    ("50%", 50.0),
    ("1,2,3", 123.0),  # quirk: commas are removed first, so a list becomes one number
    ("x = .5", 5.0),  # quirk: a number needs a digit before the point
    ("1.2.3", 3.0),  # "1.2" then "3"
    ("5 - 3 = 2", 2.0),
    ("2-1=1", 1.0),  # "2", "-1", "1"
    ("  \n The answer is 42 \n\n", 42.0),
    ("The answer is -0.5", -0.5),
    ("0.6666666666666666", 0.6666666666666666),
]


@pytest.mark.parametrize("text,expected", NUMBER_CASES)
def test_extract_number(text, expected):
    got = extract_number(text)
    assert isinstance(got, float)
    assert got == expected
    assert got == ref_extract_answer_number(text)


@pytest.mark.parametrize("text", ["no number here", "", "   ", "The answer is (C).", "-", ".", "one hundred"])
def test_extract_number_parse_failure_is_none(text):
    assert extract_number(text) is None
    assert ref_extract_answer_number(text) == float("inf")  # their code: scored wrong


@pytest.mark.parametrize("pred,gold,correct", [
    (8.0, "8", True),
    (8.0, "8.0", True),
    (1080.0, "1080.0", True),
    (1.833, "1.8333333333333335", True),  # |diff| = 0.00033
    (1.834, "1.8333333333333335", True),  # 0.00067
    (1.83, "1.8333333333333335", False),  # 0.0033
    (8.001, "8", True),  # |8 - 8.001| = 0.00099999... <= 0.001
    (8.0011, "8", False),
    (7.0, "8.0", False),
    (-15.0, "-15.0", True),
    (15.0, "-15.0", False),
    (0.6666666666666666, "0.6666666666666666", True),
    (0.667, "0.6666666666666666", True),
])
def test_number_correct_tolerance(pred, gold, correct):
    assert number_correct(pred, gold) is correct
    assert ref_number_correct(gold, pred) is correct


@pytest.mark.parametrize("pred", [None, float("inf"), float("-inf"), float("nan")])
def test_number_unparsed_is_wrong(pred):
    assert number_correct(pred, "5") is False


def test_number_sets_via_testset(arith):
    for name in ("gsm8k", "svamp", "multiarith", "addsub", "singleeq", "mawps"):
        ts = arith.test_set(name)
        assert ts.kind == "number" and not ts.multiple_choice
        pred = tasks.extract(ts, "Step 1: 1,000 - 10 = 990.\nThe answer is 990.")
        assert pred == 990.0
        assert tasks.is_correct(ts, pred, "990.0")
        assert tasks.is_correct(ts, pred, "990")
        assert not tasks.is_correct(ts, pred, "99.0")
        assert tasks.extract(ts, "I don't know") is None
        assert tasks.is_correct(ts, None, "0") is False
        # the answer line LLM-Adapters' math training data ends with scores as correct
        assert tasks.is_correct(ts, tasks.extract(ts, "The answer is 1.8333333333333335."), "1.8333333333333335")
        assert not tasks.is_correct(ts, tasks.extract(ts, "The answer is 1.83."), "1.8333333333333335")


@pytest.mark.parametrize("name", ["gsm8k", "svamp", "multiarith", "addsub", "singleeq", "mawps"])
def test_every_numeric_gold_is_reachable(arith, name):
    """'The answer is <gold>.' scores correct for every gold answer of the real test set."""
    ts = arith.test_set(name)
    records, _ = data.shipped(f"test/{name}")
    for r in records:
        pred = tasks.extract(ts, f"The answer is {r['answer']}.")
        assert tasks.is_correct(ts, pred, r["answer"]), r["answer"]


def test_numeric_training_outputs_score_correct(arith):
    """The offline math training rationales end in their own gold answer."""
    records, _ = tasks.load_train_set(arith.train_set("math_offline"), cache_dir="unused")
    numeric = [r for r in records if r["answer"] not in ("A", "B", "C", "D", "E")]
    assert len(numeric) == 9128 - 254
    wrong = [r for r in numeric if not number_correct(extract_number(r["output"]), r["answer"])]
    assert wrong == []


# ---- AQuA letters ----------------------------------------------------------------------------

LETTER_CASES = [
    ("The answer is (C).", "C"),
    ("Answer: C", "A"),  # quirk: the capital A of "Answer" comes first
    ("Each box holds 5. The answer is D", "E"),  # quirk: "Each"
    ("Bob has 3 apples, so (C)", "B"),  # quirk: "Bob"
    ("  \n (E) 25", "E"),
    ("ABCDE", "A"),
    ("the answer is (d)", None),  # lower case never matches
    ("There are 3 options; so d", None),
    ("", None),
    ("\uff21", None),  # full-width A
]


@pytest.mark.parametrize("text,expected", LETTER_CASES)
def test_extract_letter(text, expected):
    assert extract_letter(text) == expected
    assert (ref_extract_answer_letter(text) or None) == expected


def test_aqua_via_testset(arith):
    ts = arith.test_set("aqua")
    assert ts.kind == "letter" and ts.multiple_choice
    assert tasks.extract(ts, "The answer is (C).") == "C"
    assert tasks.is_correct(ts, tasks.extract(ts, "The answer is (C)."), "C")
    assert tasks.extract(ts, "Answer: C") == "A"
    assert not tasks.is_correct(ts, tasks.extract(ts, "Answer: C"), "C")
    assert tasks.is_correct(ts, tasks.extract(ts, "Answer: C"), "A")
    assert tasks.extract(ts, "no capitals at all") is None
    assert tasks.is_correct(ts, None, "A") is False
    assert tasks.options(ts, "whatever") == ["A", "B", "C", "D", "E"]


def test_every_aqua_gold_is_reachable(arith):
    ts = arith.test_set("aqua")
    records, _ = data.shipped("test/aqua")
    for r in records:
        assert tasks.is_correct(ts, tasks.extract(ts, f"The answer is ({r['answer']})."), r["answer"])


# ---- commonsense label words -----------------------------------------------------------------

def test_label_sets_are_the_papers(cs):
    assert {n: ts.labels for n, ts in cs.test_sets.items()} == PAPER_LABELS
    assert all(ts.kind == "label" and ts.multiple_choice for ts in cs.test_sets.values())


LABEL_CASES = [
    ("siqa", "the correct answer is answer2, not answer1", "answer2"),  # first in text order
    ("siqa", "answer1 is wrong; the correct answer is answer2", "answer1"),
    ("siqa", "the correct answer is answer5", "answer5"),  # 5 labels accepted even for 3-option SIQA
    ("siqa", "The correct answer is Answer2", None),  # case-sensitive
    ("boolq", "the correct answer is true", "true"),
    ("boolq", "True", None),
    ("boolq", "TRUE", None),
    ("boolq", "It is not true; the answer is false", "true"),
    ("boolq", "untrue", "true"),  # substring match
    ("boolq", "yes", None),
    ("piqa", "solution12", "solution1"),
    ("piqa", "solution2 is better than solution1", "solution2"),
    ("piqa", "Solution1", None),
    ("hellaswag", "the correct answer is ending4", "ending4"),
    ("hellaswag", "Ending4", None),
    ("hellaswag", "ending5", None),
    ("winogrande", "\n  the correct answer is option2  \n", "option2"),
    ("winogrande", "Option1", None),
    ("arc_challenge", "the correct answer is answer4", "answer4"),
    ("openbookqa", "", None),
]


@pytest.mark.parametrize("name,text,expected", LABEL_CASES)
def test_extract_label(cs, name, text, expected):
    ts = cs.test_set(name)
    assert extract_label(text, list(ts.labels)) == expected
    assert tasks.extract(ts, text) == expected
    assert (ref_extract_label(text, PAPER_LABELS[name]) or None) == expected


def test_label_is_correct(cs):
    ts = cs.test_set("siqa")
    assert tasks.is_correct(ts, tasks.extract(ts, "the correct answer is answer2, not answer1"), "answer2")
    assert not tasks.is_correct(ts, tasks.extract(ts, "the correct answer is answer2, not answer1"), "answer1")
    assert tasks.is_correct(ts, None, "answer1") is False
    boolq = cs.test_set("boolq")
    assert not tasks.is_correct(boolq, tasks.extract(boolq, "True"), "true")


@pytest.mark.parametrize("name", list(PAPER_LABELS))
def test_commonsense_outputs_extract_their_gold(cs, name):
    """Every real test item's output ('the correct answer is X') extracts X, and X is one of its options."""
    ts = cs.test_set(name)
    records, _ = data.shipped(f"test/{name}")
    for r in records:
        pred = tasks.extract(ts, r["output"])
        assert pred == r["answer"] and tasks.is_correct(ts, pred, r["answer"])
        assert r["answer"] in tasks.options(ts, r["instruction"])


# ---- answer options ("Answer format: ..." line) ---------------------------------------------

DEFAULT = ["answer1", "answer2", "answer3", "answer4", "answer5"]


def test_answer_options_three():
    instr = ("Please choose the correct answer to the question: As children grow, their body height usually\n\n"
             "Answer1: decreases Answer2: increases Answer3: remains the same\n\n"
             "Answer format: answer1/answer2/answer3")
    assert answer_options(instr, DEFAULT) == ["answer1", "answer2", "answer3"]


def test_answer_options_five():
    instr = ("Please choose the correct answer to the question: What is formed?\n\n"
             "Answer1: A mixture Answer2: A compound Answer3: An element Answer4: An alloy Answer5: A solution\n\n"
             "Answer format: answer1/answer2/answer3/answer4/answer5")
    assert answer_options(instr, DEFAULT[:4]) == DEFAULT


def test_answer_options_inline_and_trailing_whitespace():
    assert answer_options("Option1: Sarah Option2: Maria Answer format: option1/option2", ["x"]) == \
        ["option1", "option2"]
    assert answer_options("q?\n\nAnswer format: true/false\n", ["x"]) == ["true", "false"]
    # the last format line counts
    assert answer_options("Answer format: a/b is a phrase\n\nAnswer format: answer1/answer2", ["x"]) == \
        ["answer1", "answer2"]


@pytest.mark.parametrize("instr", ["Please choose the correct answer: which one?", "Answer format:", "Answer format:  \n"])
def test_answer_options_missing_line_falls_back(instr):
    default = ["answer1", "answer2", "answer3", "answer4"]
    got = answer_options(instr, default)
    assert got == default
    got.append("answer9")  # a copy, not the caller's list
    assert default == ["answer1", "answer2", "answer3", "answer4"]


def test_options_use_format_line_or_set_labels(cs, arith):
    siqa = cs.test_set("siqa")
    assert tasks.options(siqa, "q\n\nAnswer format: answer1/answer2/answer3") == ["answer1", "answer2", "answer3"]
    assert tasks.options(siqa, "no format line") == list(siqa.labels)
    with pytest.raises(ConfigError, match="gsm8k"):
        tasks.options(arith.test_set("gsm8k"), "q")


@pytest.mark.parametrize("name,n3,n5", [("arc_easy", 7, 4), ("arc_challenge", 4, 3)])
def test_arc_option_counts(cs, name, n3, n5):
    """MANIFEST.md: ARC-e has 7 three-option and 4 five-option items, ARC-c 4 and 3; the rest have 4."""
    ts = cs.test_set(name)
    records, _ = data.shipped(f"test/{name}")
    counts = [len(tasks.options(ts, r["instruction"])) for r in records]
    assert counts.count(3) == n3
    assert counts.count(5) == n5
    assert counts.count(4) == len(records) - n3 - n5


def test_math_reference_is_sane():
    """Guard the oracle copies themselves against accidental edits."""
    assert ref_extract_answer_number("a 1,5 b") == 15.0
    assert math.isinf(ref_extract_answer_number("none"))
    assert ref_extract_answer_letter("xBx") == "B"
