"""LLM-Adapters commonsense reasoning: 8 multiple-choice sets answered with label words."""
from harness.tasks import TaskFamily, TestSet, TrainSet, register

ANSWERS = tuple(f"answer{i}" for i in range(1, 6))
ALL = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")

FAMILY = register(TaskFamily(
    name="commonsense",
    test_sets={
        "boolq": TestSet("boolq", "BoolQ", "label", ("true", "false")),
        "piqa": TestSet("piqa", "PIQA", "label", ("solution1", "solution2")),
        "siqa": TestSet("siqa", "SIQA", "label", ANSWERS),
        "hellaswag": TestSet("hellaswag", "HellaSwag", "label", tuple(f"ending{i}" for i in range(1, 5)),
                             remote_exact="hellaswag_exact"),
        "winogrande": TestSet("winogrande", "WinoGrande", "label", ("option1", "option2")),
        "arc_easy": TestSet("arc_easy", "ARC-e", "label", ANSWERS),
        "arc_challenge": TestSet("arc_challenge", "ARC-c", "label", ANSWERS),
        "openbookqa": TestSet("openbookqa", "OBQA", "label", ANSWERS),
    },
    train_sets={
        "commonsense_offline": TrainSet(
            "commonsense_offline",
            shipped=("train/boolq_train", "train/arc_easy_train", "train/arc_challenge_train",
                     "train/openbookqa_train"),
            train_splits=("boolq", "arc_easy", "arc_challenge", "openbookqa"),
            note="offline stand-in for commonsense_170k: the BoolQ, ARC-e, ARC-c and OBQA train files "
                 "(17,754 items; no PIQA/SIQA/WinoGrande/HellaSwag training data)"),
        "commonsense_170k": TrainSet("commonsense_170k", remote="commonsense_170k", nominal_records=170_000, train_splits=ALL),
        "commonsense_15k": TrainSet("commonsense_15k", remote="commonsense_15k", nominal_records=15_000, train_splits=ALL),
    },
    paper_average=ALL,
    max_new_tokens=32,
    paper_train_set="commonsense_170k",
    # out of the domain: every commonsense test set is this family's own task (and half of their
    # training splits are in its training data), so forgetting is measured on math text instead
    retention=("gsm8k_train_solutions",),
))
