"""Prompt templates, byte for byte.

`paper` style: training prompts as LLM-Adapters' finetune.py builds them, evaluation prompts as its
evaluate.py / commonsense_evaluate.py build them. Both come from indented triple-quoted f-strings,
so every line after the first starts with 16 spaces; finetune.py's no-input head ends in TWO
spaces and its blank lines hold 16 spaces, evaluate.py's no-input head ends in ONE space and its
blank lines are empty. With an input, finetune.py's head ends in one space and evaluate.py's in none.
The expected strings below are written out literally on purpose.
"""
from __future__ import annotations

import pytest

from harness.pipeline import prompts

SP16 = "                "  # exactly 16 spaces
assert len(SP16) == 16

# ---- paper style, no input -------------------------------------------------------------------

TRAIN_PAPER = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.  \n"
    "\n"
    "                ### Instruction:\n"
    "                What is 2+2?\n"
    "                \n"
    "                ### Response:\n"
    "                The answer is 4."
)

EVAL_PAPER = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n"
    "\n"
    "                ### Instruction:\n"
    "                What is 2+2?\n"
    "\n"
    "                ### Response:\n"
    "                "
)

# ---- paper style, with input -----------------------------------------------------------------

TRAIN_PAPER_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request. \n"
    "\n"
    "                ### Instruction:\n"
    "                Add the numbers.\n"
    "                \n"
    "                ### Input:\n"
    "                3 and 4\n"
    "                \n"
    "                ### Response:\n"
    "                7"
)

EVAL_PAPER_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n"
    "\n"
    "                ### Instruction:\n"
    "                Add the numbers.\n"
    "\n"
    "                ### Input:\n"
    "                3 and 4\n"
    "\n"
    "                ### Response:\n"
    "                "
)

# ---- clean style -----------------------------------------------------------------------------

EVAL_CLEAN = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n"
    "\n"
    "### Instruction:\n"
    "What is 2+2?\n"
    "\n"
    "### Response:\n"
)

EVAL_CLEAN_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n"
    "\n"
    "### Instruction:\n"
    "Add the numbers.\n"
    "\n"
    "### Input:\n"
    "3 and 4\n"
    "\n"
    "### Response:\n"
)


def test_train_prompt_paper():
    assert prompts.train_prompt("What is 2+2?", "", "The answer is 4.", style="paper") == TRAIN_PAPER


def test_train_prompt_is_paper_by_default():
    assert prompts.train_prompt("What is 2+2?", output="The answer is 4.") == TRAIN_PAPER


def test_eval_prompt_paper():
    assert prompts.eval_prompt("What is 2+2?", "", style="paper") == EVAL_PAPER
    assert prompts.eval_prompt("What is 2+2?") == EVAL_PAPER


def test_paper_whitespace_details():
    train_lines = TRAIN_PAPER.split("\n")
    eval_lines = EVAL_PAPER.split("\n")
    got_train = prompts.train_prompt("What is 2+2?", "", "The answer is 4.").split("\n")
    got_eval = prompts.eval_prompt("What is 2+2?").split("\n")
    assert got_train == train_lines and got_eval == eval_lines
    assert got_train[0].endswith("request.  ") and not got_train[0].endswith("   ")  # two spaces
    assert got_eval[0].endswith("request. ") and not got_eval[0].endswith("  ")  # one space
    assert got_train[4] == SP16  # finetune.py's blank line holds 16 spaces
    assert got_eval[4] == ""  # evaluate.py's is empty
    assert got_eval[-1] == SP16  # the model continues after 16 spaces
    # the two scripts really differ: the evaluation prompt is not a prefix of the training text
    assert not TRAIN_PAPER.startswith(EVAL_PAPER)


def test_paper_with_input():
    assert prompts.train_prompt("Add the numbers.", "3 and 4", "7", style="paper") == TRAIN_PAPER_INPUT
    assert prompts.eval_prompt("Add the numbers.", "3 and 4", style="paper") == EVAL_PAPER_INPUT


def test_empty_input_means_no_input_section():
    assert "### Input:" not in prompts.train_prompt("x", "", "y")
    assert "### Input:" not in prompts.eval_prompt("x", "")
    assert "### Input:" not in prompts.eval_prompt("x", "", style="clean")


def test_multiline_instruction_is_not_reindented():
    instr = "Please answer the following question with true or false, question: is it?\n\nAnswer format: true/false"
    expected = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request. \n"
        "\n"
        "                ### Instruction:\n"
        "                Please answer the following question with true or false, question: is it?\n"
        "\n"
        "Answer format: true/false\n"
        "\n"
        "                ### Response:\n"
        "                "
    )
    assert prompts.eval_prompt(instr) == expected


def test_clean_style():
    assert prompts.eval_prompt("What is 2+2?", style="clean") == EVAL_CLEAN
    assert prompts.eval_prompt("Add the numbers.", "3 and 4", style="clean") == EVAL_CLEAN_INPUT
    assert prompts.train_prompt("What is 2+2?", "", "The answer is 4.", style="clean") == \
        EVAL_CLEAN + "The answer is 4."
    assert prompts.train_prompt("Add the numbers.", "3 and 4", "7", style="clean") == EVAL_CLEAN_INPUT + "7"
    for text in (EVAL_CLEAN, EVAL_CLEAN_INPUT):
        assert all(not line.startswith(" ") for line in text.split("\n"))


@pytest.mark.parametrize("style", ["paper", "clean"])
@pytest.mark.parametrize("inp", ["", "some input"])
def test_training_prompt_without_output_is_prefix(style, inp):
    """train.py masks the prompt as train_prompt(..., output='') and trains on the rest."""
    user = prompts.train_prompt("Q?", inp, "", style)
    full = prompts.train_prompt("Q?", inp, "The answer is 4.", style)
    assert full == user + "The answer is 4."


@pytest.mark.parametrize("style", ["alpaca", "Paper", "", "CLEAN"])
def test_unknown_style_raises(style):
    with pytest.raises(ValueError, match="unknown prompt style"):
        prompts.eval_prompt("x", style=style)
    with pytest.raises(ValueError, match="unknown prompt style"):
        prompts.train_prompt("x", "", "y", style=style)


@pytest.mark.parametrize("generation,expected", [
    ("  The answer is 5.  ", "The answer is 5."),
    (" 42 \n\n### Response: more", "42"),
    ("A\n### Response:\nB\n### Response:\nC", "A"),
    ("### Response: x", ""),
    ("", ""),
    ("the correct answer is answer2\n\n### Instruction:\nnext", "the correct answer is answer2\n\n### Instruction:\nnext"),
    ("\n                The answer is 7.</s>", "The answer is 7.</s>"),
])
def test_response_text(generation, expected):
    assert prompts.response_text(generation) == expected


@pytest.mark.parametrize("generation", ["  The answer is 5.  ", " 42 \n### Response: 7", "x### Response:y### Response:z", ""])
def test_response_text_matches_llm_adapters_split(generation):
    """LLM-Adapters decodes prompt + generation and takes .split('### Response:')[1].strip()."""
    prompt = prompts.eval_prompt("What is 2+2?")
    assert prompts.response_text(generation) == (prompt + generation).split("### Response:")[1].strip()
