"""Run by tests/slow/test_optimum.py inside optimum's own virtual environment (its transformers pin differs from
the project's): load an exported directory with optimum's ONNX Runtime classes, generate greedily, print the
tokens as JSON. Reads one JSON request on stdin: {"kind": "causal" | "seq2seq" | "speech", "dir": ...,
"inputs": {name: nested list}, "max_new_tokens": N}. Imports nothing from graphformer."""
import json
import sys

import numpy as np
import torch


def main() -> None:
    req = json.load(sys.stdin)
    from optimum.onnxruntime import ORTModelForCausalLM, ORTModelForSeq2SeqLM, ORTModelForSpeechSeq2Seq
    cls = {"causal": ORTModelForCausalLM, "seq2seq": ORTModelForSeq2SeqLM, "speech": ORTModelForSpeechSeq2Seq}
    model = cls[req["kind"]].from_pretrained(req["dir"], use_cache=True)
    inputs = {k: torch.tensor(np.asarray(v, dtype=np.float32 if k == "input_features" else np.int64))
              for k, v in req["inputs"].items()}
    out = model.generate(**inputs, max_new_tokens=req["max_new_tokens"], do_sample=False, num_beams=1,
                         **req.get("generate", {}))
    print(json.dumps({"tokens": out.tolist(), "class": type(model).__name__}))


if __name__ == "__main__":
    main()
