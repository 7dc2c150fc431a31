"""What a cloze item is, per commonsense set, as lm-evaluation-harness defines its multiple-choice tasks:
the zero-shot prompt (ARC "Question: {q}\\nAnswer:" + " {choice}", HellaSwag's preprocessed
"{label}: {ctx}" + " {ending}", WinoGrande's partial scoring, ...), the options, the gold option and
the standard metric (acc, or acc_norm where lm-eval reports it). Scoring them is
harness.pipeline.cloze's work; the checks and the report read only these declarations.

The questions, options and gold come from the shipped LLM-Adapters files; where that format lost
something lm-eval's prompt uses, `LOST` says what (records and docs/tasks-and-scoring.md carry it):
BoolQ has no passage; HellaSwag's ctx_b is not capitalised (the two halves of its context are not
told apart) and the file is the approximate rebuild. tests/test_cloze.py checks the templates against
lm-eval's task configs.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

SETS = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
# lm-eval's metric_list per task: acc_norm only where the task reports it
HAS_ACC_NORM = {"piqa", "hellaswag", "arc_easy", "arc_challenge", "openbookqa"}
# sets shown but left out of a cloze average, and why: the prompt lost what lm-eval's uses, so the
# score measures something else (without its passage, BoolQ is a guess from the question: the base
# model's 38.0% is about what always answering "no" scores, 37.8% of the answers being "false")
NOT_AVERAGED = {"boolq": "its prompt lost the passage (LLM-Adapters' file has none), so it measures a guess "
                         "from the question alone"}
LOST = {
    "boolq": "no passage: LLM-Adapters' BoolQ file holds the question only, so the prompt is lm-eval's "
             "'{passage}\\nQuestion: {question}?\\nAnswer:' without its passage",
    "hellaswag": "ctx_b is not capitalised (LLM-Adapters joined ctx_a and ctx_b), and the shipped file is "
                 "an approximate rebuild of LLM-Adapters' HellaSwag",
}


def standard_metric(name: str) -> str:
    """The set's standard lm-eval metric: acc_norm where the task reports it, else acc. Records keep
    both (eval.<set>.accuracy and accuracy_norm; predictions' correct and correct_norm)."""
    return "acc_norm" if name in HAS_ACC_NORM else "acc"


@dataclass(frozen=True)
class ClozeItem:
    contexts: tuple  # one per option (WinoGrande: the sentence up to the blank, filled with the option)
    continuations: tuple  # one per option (WinoGrande: the shared rest of the sentence)
    choices: tuple  # lm-eval's doc_to_choice: what acc_norm divides by
    gold: int
    labels: tuple  # LLM-Adapters' label word of each option (what records and predictions say)


# ---- the LLM-Adapters files -> lm-eval documents ------------------------------------------------

def _between(text: str, start: str, end: str) -> str:
    i = text.index(start) + len(start)
    return text[i:text.index(end, i)]


def _options(segment: str, word: str) -> list[str]:
    """'Answer1: a Answer2: b' -> ['a', 'b'] (numbered in order, as LLM-Adapters writes them)."""
    parts = re.split(rf"(?:^|\s+){word}(\d+): ", segment.strip())
    numbers, texts = parts[1::2], parts[2::2]
    if numbers != [str(i) for i in range(1, len(numbers) + 1)]:
        raise ValueError(f"options not numbered 1..n: {numbers}")
    return [t.strip() for t in texts]


def _gold(answer: str, word: str) -> int:
    return int(answer[len(word):]) - 1


def doc(name: str, rec: dict) -> dict:
    """The lm-eval (Hugging Face dataset) document a shipped record stands for."""
    ins, answer = rec["instruction"], rec["answer"]
    if name == "boolq":
        q = _between(ins, "question: ", "\n\nAnswer format")
        return {"question": q[:-1] if q.endswith("?") else q, "passage": None, "label": int(answer == "true")}
    if name == "piqa":
        goal = _between(ins, "solution to the question: ", "\n\nSolution1: ")
        sol1 = _between(ins, "\n\nSolution1: ", "\n\nSolution2: ")
        sol2 = _between(ins, "\n\nSolution2: ", "\n\nAnswer format")
        return {"goal": goal, "sol1": sol1, "sol2": sol2, "label": _gold(answer, "solution")}
    if name == "winogrande":
        sentence = _between(ins, "complete the given sentence: ", "\n\nOption1: ")
        o1 = _between(ins, "\n\nOption1: ", " Option2: ")
        o2 = _between(ins, " Option2: ", " Answer format")
        return {"sentence": sentence, "option1": o1, "option2": o2, "answer": answer[-1]}
    if name == "hellaswag":
        ctx = _between(ins, "complete the given sentence: ", "\n\nEnding1: ")
        endings = _options(_between(ins, "\n\n", "\n\nAnswer format"), "Ending")
        return {"ctx": ctx, "endings": endings, "label": _gold(answer, "ending")}
    question = _between(ins, "to the question: ", "\n\nAnswer1: ")
    options = _options(_between(ins, question + "\n\n", "\n\nAnswer format"), "Answer")
    if name == "siqa":  # LLM-Adapters wrote "{context} {question}": lm-eval's prompt joins them the same way
        return {"context_question": question, "answers": options, "label": _gold(answer, "answer")}
    return {"question": question, "choices": {"text": options}, "label": _gold(answer, "answer")}


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag/utils.py preprocess (WikiHow markers)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def item(name: str, rec: dict) -> ClozeItem:
    """lm-eval's prompt for one record: contexts, continuations (with its " " target delimiter), gold."""
    d = doc(name, rec)
    if name == "winogrande":  # partial scoring: the option filled in, the shared remainder scored
        blank = d["sentence"].index("_")
        contexts = tuple(d["sentence"][:blank] + o for o in (d["option1"], d["option2"]))
        rest = " " + d["sentence"][blank + 1:].strip()
        return ClozeItem(contexts, (rest, rest), contexts, int(d["answer"]) - 1, ("option1", "option2"))
    if name == "boolq":
        context, choices = f"Question: {d['question']}?\nAnswer:", ("no", "yes")
    elif name == "piqa":
        context, choices = f"Question: {d['goal']}\nAnswer:", (d["sol1"], d["sol2"])
    elif name == "siqa":
        context, choices = f"Q: {d['context_question']}\nA:", tuple(d["answers"])
    elif name == "hellaswag":
        context, choices = hellaswag_preprocess(d["ctx"]), tuple(hellaswag_preprocess(e) for e in d["endings"])
    elif name == "openbookqa":
        context, choices = d["question"], tuple(d["choices"]["text"])
    else:  # arc_easy, arc_challenge
        context, choices = f"Question: {d['question']}\nAnswer:", tuple(d["choices"]["text"])
    word = {"boolq": None, "piqa": "solution", "hellaswag": "ending"}.get(name, "answer")
    labels = ("false", "true") if word is None else tuple(f"{word}{k + 1}" for k in range(len(choices)))
    return ClozeItem((context,) * len(choices), tuple(" " + c for c in choices), choices, d["label"], labels)
