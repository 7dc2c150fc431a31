"""Developer tool: rebuild harness/data/ from the offline copy in ../shared/data/llm_adapters.

The product never reads ../shared: this script gzips the files into the package once and writes
harness/data/manifest.json (records, sha256 of the uncompressed JSON, source, license) which the
loader checks on every read.   Usage: python tools/package_data.py [SHARED_DIR]
"""
import gzip
import hashlib
import json
import shutil
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/llm_adapters")
DST = Path(__file__).resolve().parents[1] / "harness" / "data"

# (shipped name, source path, role, note, license)
FILES = [
    ("test/gsm8k", "test/gsm8k.json", "LLM-Adapters dataset/gsm8k/test.json", "MIT"),
    ("test/svamp", "test/svamp.json", "LLM-Adapters dataset/SVAMP/test.json", "MIT"),
    ("test/multiarith", "test/multiarith.json", "LLM-Adapters dataset/MultiArith/test.json", "unknown"),
    ("test/addsub", "test/addsub.json", "LLM-Adapters dataset/AddSub/test.json", "unknown"),
    ("test/aqua", "test/aqua.json", "LLM-Adapters dataset/AQuA/test.json", "Apache-2.0"),
    ("test/singleeq", "test/singleeq.json", "LLM-Adapters dataset/SingleEq/test.json", "unknown"),
    ("test/mawps", "test/mawps.json", "LLM-Adapters dataset/mawps/test.json", "unknown"),
    ("test/boolq", "test/boolq.json", "LLM-Adapters dataset/boolq/test.json", "CC BY-SA 3.0"),
    ("test/piqa", "test/piqa.json", "LLM-Adapters dataset/piqa/test.json", "unknown (AFL-3.0 per HF card)"),
    ("test/siqa", "test/siqa.json", "LLM-Adapters dataset/social_i_qa/test.json", "unknown"),
    ("test/hellaswag", "test/hellaswag_approx.json",
     "APPROXIMATE rebuild of LLM-Adapters dataset/hellaswag/test.json (WikiHow markers stripped)", "MIT"),
    ("test/winogrande", "test/winogrande.json", "LLM-Adapters dataset/winogrande/test.json", "unknown (CC-BY per HF card)"),
    ("test/arc_easy", "test/arc_easy.json", "LLM-Adapters dataset/ARC-Easy/test.json", "CC BY-SA 4.0 (AI2)"),
    ("test/arc_challenge", "test/arc_challenge.json", "LLM-Adapters dataset/ARC-Challenge/test.json", "CC BY-SA 4.0 (AI2)"),
    ("test/openbookqa", "test/openbookqa.json", "LLM-Adapters dataset/openbookqa/test.json", "unknown"),
    ("train/gsm8k_train", "train/gsm8k_train.json", "derived: openai/grade-school-math train, rationales kept", "MIT"),
    ("train/mawps_asdiv_train", "train/mawps_asdiv_train.json",
     "derived: SVAMP repo cv_mawps + cv_asdiv-a folds, deduplicated against all math test sets", "MIT (SVAMP repo)"),
    ("train/aqua_dev_train", "train/aqua_dev_train.json", "derived: google-deepmind/AQuA dev split", "Apache-2.0"),
    ("train/boolq_train", "train/components/boolq_train.json", "LLM-Adapters dataset/boolq/train.json", "CC BY-SA 3.0"),
    ("train/arc_easy_train", "train/components/arc_easy_train.json", "LLM-Adapters dataset/ARC-Easy/train.json", "CC BY-SA 4.0 (AI2)"),
    ("train/arc_challenge_train", "train/components/arc_challenge_train.json",
     "LLM-Adapters dataset/ARC-Challenge/train.json", "CC BY-SA 4.0 (AI2)"),
    ("train/openbookqa_train", "train/components/openbookqa_train.json", "LLM-Adapters dataset/openbookqa/train.json", "unknown"),
]


def main() -> None:
    manifest = {"source_snapshot": "AGI-Edgerunners/LLM-Adapters@816657208af4db747803f87ba40a4c71383fed7a",
                "details": "MANIFEST.md", "files": {}}
    for name, src, source, license_ in FILES:
        raw = (SRC / src).read_bytes()
        out = DST / f"{name}.json.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
        manifest["files"][name] = {
            "path": f"{name}.json.gz", "records": len(json.loads(raw)),
            "sha256": hashlib.sha256(raw).hexdigest(), "source": source, "license": license_,
            "approximate": name == "test/hellaswag",
        }
    (DST / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    shutil.copyfile(SRC / "MANIFEST.md", DST / "MANIFEST.md")


if __name__ == "__main__":
    main()
