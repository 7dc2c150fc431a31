"""LLM-Adapters arithmetic reasoning: 7 test sets, numeric answers (AQuA: a letter)."""
from harness.tasks import HeldOutText, TaskFamily, TestSet, TrainSet, register

LEAKY = ("addsub", "multiarith", "singleeq")  # drawn from MAWPS, which math_10k trains on

FAMILY = register(TaskFamily(
    name="arithmetic",
    test_sets={
        "gsm8k": TestSet("gsm8k", "GSM8K", "number"),
        "svamp": TestSet("svamp", "SVAMP", "number"),
        "multiarith": TestSet("multiarith", "MultiArith", "number"),
        "addsub": TestSet("addsub", "AddSub", "number"),
        "aqua": TestSet("aqua", "AQuA", "letter"),
        "singleeq": TestSet("singleeq", "SingleEq", "number"),
        "mawps": TestSet("mawps", "MAWPS", "number"),
    },
    train_sets={
        "math_offline": TrainSet(
            "math_offline", shipped=("train/gsm8k_train", "train/mawps_asdiv_train", "train/aqua_dev_train"),
            train_splits=("gsm8k", "mawps", "aqua"),
            note="offline stand-in for math_10k: GSM8K train + MAWPS/ASDiv-A (deduplicated against the "
                 "test sets) + AQuA dev, 9128 items, human or equation rationales"),
        "gsm8k_train": TrainSet("gsm8k_train", shipped=("train/gsm8k_train",), train_splits=("gsm8k",)),
        "math_10k": TrainSet("math_10k", remote="math_10k", nominal_records=10_000, contaminates=LEAKY,
                             train_splits=("gsm8k", "mawps", "aqua"),
                             note="the paper's set; contains MAWPS training data overlapping AddSub/MultiArith/SingleEq"),
        "math_7k": TrainSet("math_7k", remote="math_7k", nominal_records=7_000, train_splits=("gsm8k", "aqua"),
                            note="math_10k without MAWPS"),
        "math_14k": TrainSet("math_14k", remote="math_14k", nominal_records=14_000, train_splits=("gsm8k", "aqua"),
                             note="ChatGPT+GPT-4 rationales, no MAWPS"),
        "math_50k": TrainSet("math_50k", remote="math_50k", nominal_records=50_000, train_splits=("gsm8k", "mawps", "aqua")),
    },
    paper_average=("gsm8k", "aqua", "mawps", "svamp"),
    max_new_tokens=256,
    paper_train_set="math_10k",
    # Biderman et al.'s suite for models trained on code and math: commonsense, zero-shot cloze
    retention=("hellaswag", "arc_challenge", "winogrande"),
    texts={
        "gsm8k_train_solutions": HeldOutText(
            "gsm8k_train_solutions", "GSM8K train solutions (CE)", shipped="train/gsm8k_train",
            train_split_of="gsm8k", context="Question: {instruction}\nAnswer:", continuation=" {output}",
            note="GSM8K's human-written training solutions (calculator annotations removed, 'The answer is N.' "
                 "last), the first forgetting.limit of the file; not in any test set; the training data of "
                 "arithmetic runs, so only other families' runs are scored on it"),
    },
))
