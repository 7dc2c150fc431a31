"""The LLM-Adapters prompt template, byte-exact, and a clean variant.

LLM-Adapters builds its prompts inside indented triple-quoted f-strings, so every line after the
first carries 16 leading spaces. finetune.py and evaluate.py differ slightly: the training prompt's
first line ends in two spaces and its blank lines hold 16 spaces; the evaluation prompt's first line
ends in one space and its blank lines are empty. The `paper` style reproduces both exactly (training
prompts from finetune.py, evaluation prompts from evaluate.py); `clean` drops the artefacts.
"""
from __future__ import annotations

_I = " " * 16
_HEAD = "Below is an instruction that describes a task. Write a response that appropriately completes the request."
_HEAD_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
               "context. Write a response that appropriately completes the request.")

STYLES = ("paper", "clean")
RESPONSE_MARKER = "### Response:"


def train_prompt(instruction: str, input: str = "", output: str = "", style: str = "paper") -> str:
    """The full training text (prompt followed by the response)."""
    if style == "paper":  # finetune.py: generate_prompt
        if input:
            return (f"{_HEAD_INPUT} \n\n{_I}### Instruction:\n{_I}{instruction}\n{_I}\n"
                    f"{_I}### Input:\n{_I}{input}\n{_I}\n{_I}### Response:\n{_I}{output}")
        return f"{_HEAD}  \n\n{_I}### Instruction:\n{_I}{instruction}\n{_I}\n{_I}### Response:\n{_I}{output}"
    return eval_prompt(instruction, input, style) + output


def eval_prompt(instruction: str, input: str = "", style: str = "paper") -> str:
    """The prompt the model completes at evaluation."""
    if style == "paper":  # evaluate.py / commonsense_evaluate.py: generate_prompt
        if input:
            return (f"{_HEAD_INPUT}\n\n{_I}### Instruction:\n{_I}{instruction}\n\n"
                    f"{_I}### Input:\n{_I}{input}\n\n{_I}### Response:\n{_I}")
        return f"{_HEAD} \n\n{_I}### Instruction:\n{_I}{instruction}\n\n{_I}### Response:\n{_I}"
    if style == "clean":
        if input:
            return f"{_HEAD_INPUT}\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
        return f"{_HEAD}\n\n### Instruction:\n{instruction}\n\n### Response:\n"
    raise ValueError(f"unknown prompt style '{style}'; choose one of {STYLES}")


def response_text(generation: str) -> str:
    """What LLM-Adapters scores: the text after '### Response:' up to any further '### Response:'.

    Their code decodes prompt+generation and takes .split('### Response:')[1].strip(); we decode only
    the generated tokens, so the equivalent is the part before a repeated marker.
    """
    return generation.split(RESPONSE_MARKER)[0].strip()
