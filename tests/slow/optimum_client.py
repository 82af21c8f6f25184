"""Run by tests/slow/test_optimum.py inside optimum's own virtual environment (tests/optimum_venv.py; its
transformers pin differs from the project's): load each exported directory with optimum's ONNX Runtime
class, generate greedily, print the tokens as JSON. Reads a JSON list of requests on stdin, each
{"kind": "causal" | "seq2seq" | "speech", "dir": ..., "inputs": {name: nested list}, "max_new_tokens": N};
prints a list of {"tokens": ..., "class": ...} or {"error": ...}. Imports nothing from graphformer."""
import json
import sys
import traceback

import numpy as np
import torch


def run(req: dict) -> dict:
    from optimum.onnxruntime import ORTModelForCausalLM, ORTModelForSeq2SeqLM, ORTModelForSpeechSeq2Seq
    cls = {"causal": ORTModelForCausalLM, "seq2seq": ORTModelForSeq2SeqLM, "speech": ORTModelForSpeechSeq2Seq}
    model = cls[req["kind"]].from_pretrained(req["dir"], use_cache=True)
    inputs = {k: torch.tensor(np.asarray(v, dtype=np.float32 if k == "input_features" else np.int64))
              for k, v in req["inputs"].items()}
    out = model.generate(**inputs, max_new_tokens=req["max_new_tokens"], do_sample=False, num_beams=1)
    return {"tokens": out.tolist(), "class": type(model).__name__}


def main() -> None:
    results = []
    for req in json.load(sys.stdin):
        try:
            results.append(run(req))
        except Exception as e:   # one refusal does not hide the other results
            results.append({"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
