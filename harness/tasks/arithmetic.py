"""LLM-Adapters arithmetic reasoning: 7 test sets, numeric answers (AQuA: a letter)."""
from harness.tasks import TaskFamily, TestSet, TrainSet, register

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
            note="offline stand-in for math_10k: GSM8K train + MAWPS/ASDiv-A (deduplicated against the "
                 "test sets) + AQuA dev, 9128 items, human or equation rationales"),
        "gsm8k_train": TrainSet("gsm8k_train", shipped=("train/gsm8k_train",)),
        "math_10k": TrainSet("math_10k", remote="math_10k", contaminates=LEAKY,
                             note="the paper's set; contains MAWPS training data overlapping AddSub/MultiArith/SingleEq"),
        "math_7k": TrainSet("math_7k", remote="math_7k", note="math_10k without MAWPS"),
        "math_14k": TrainSet("math_14k", remote="math_14k", note="ChatGPT+GPT-4 rationales, no MAWPS"),
        "math_50k": TrainSet("math_50k", remote="math_50k"),
    },
    paper_average=("gsm8k", "aqua", "mawps", "svamp"),
    max_new_tokens=256,
))
