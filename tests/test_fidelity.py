"""Reference fidelity (issue 19): every class the docs say a weight map reads loads through it with nothing
unused or missing; the bundled specs take the references' optional inputs and config knobs, and match them
at non-default values of each knob, padding included.

References are built offline from configs with random weights. Claims are checked on the meta device at
the default sizes (shapes only, nothing allocated); parity runs at small configs in fp32.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from torch import nn  # noqa: E402

import graphformer  # noqa: E402
from graphformer.backends.weights import WeightMapError, convert_state_dict  # noqa: E402
from parity import assert_close, ours  # noqa: E402

T.logging.set_verbosity_error()

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "graphformer" / "specs"


def spec(name: str, preset: str | None = None, **overrides):
    return graphformer.load(str(SPECS / f"{name}.yaml"), preset=preset, overrides=overrides)


def randomize(ref: nn.Module, seed: int) -> nn.Module:
    """Perturb every parameter, so norm scales (init 1), biases (init 0) and ties all carry information."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return ref.eval()


# ---------------------------------------------------------------- claims: "map X reads Y"

# (claimed class, spec, preset, overrides, map, the reference at the spec's default size)
CLAIMS = [
    ("TransformerEncoderLayer", "encoder-block", None, {}, "torch",
     lambda: nn.TransformerEncoderLayer(512, 8, batch_first=True)),
    ("TransformerDecoderLayer", "decoder-block", None, {}, "torch",
     lambda: nn.TransformerDecoderLayer(512, 8, batch_first=True)),
    ("Transformer", "transformer", None, {}, "torch", lambda: nn.Transformer(batch_first=True)),
    ("BertModel", "bert-base", None, {}, "hf", lambda: T.BertModel(T.BertConfig())),
    ("BertModel", "bert-base", None, {"pooler": False}, "hf",
     lambda: T.BertModel(T.BertConfig(), add_pooling_layer=False)),
    ("GPT2LMHeadModel", "gpt2", None, {}, "hf", lambda: T.GPT2LMHeadModel(T.GPT2Config())),
    ("GPT2Model", "gpt2", None, {}, "hf", lambda: T.GPT2Model(T.GPT2Config())),
    ("ViTForImageClassification", "vit-b16", None, {}, "hf",
     lambda: T.ViTForImageClassification(T.ViTConfig(num_labels=1000))),
    ("ViTModel", "vit-b16", "backbone", {}, "hf", lambda: T.ViTModel(T.ViTConfig())),
    ("ViTModel", "vit-b16", None, {"head": False}, "hf",
     lambda: T.ViTModel(T.ViTConfig(), add_pooling_layer=False)),
    ("CLIPModel", "clip-vit-b32", None, {}, "hf", lambda: T.CLIPModel(T.CLIPConfig())),
    ("ASTModel", "ast", None, {}, "hf", lambda: T.ASTModel(T.ASTConfig())),
    ("DecisionTransformerModel", "decision-transformer", None, {}, "hf",
     lambda: T.DecisionTransformerModel(T.DecisionTransformerConfig())),
    ("LlamaForCausalLM", "llama", None, {}, "hf", lambda: T.LlamaForCausalLM(T.LlamaConfig())),
    ("LlamaModel", "llama", None, {"head": False}, "hf", lambda: T.LlamaModel(T.LlamaConfig())),
]


@pytest.mark.parametrize("cls,name,preset,overrides,mapping,make", CLAIMS,
                         ids=[f"{c[1]}<-{c[0]}{'-' + str(c[2] or c[3]) if c[2] or c[3] else ''}" for c in CLAIMS])
def test_every_claimed_reference_loads_through_the_map(cls, name, preset, overrides, mapping, make):
    """Every tensor of the reference is used and every parameter of the spec is set (shapes only)."""
    with torch.device("meta"):
        ref = make()
    assert type(ref).__name__ == cls
    s = spec(name, preset, **overrides)
    converted = convert_state_dict(s, ref.state_dict(), mapping)   # raises on anything unused or unset
    assert sum(v.numel() for v in converted.values()) == sum(p.numel() for p in ref.parameters())


def _claimed_classes() -> set[str]:
    """Classes the docs say a map reads: `reads X`, `reads X/Y`, `reads X (or Y)`, as written in backticks
    or plainly after the word."""
    found = set()
    for doc in ("docs/models.md", "docs/weight-maps.md"):
        text = (ROOT / doc).read_text()
        for m in re.finditer(r"(?:\breads\b|[Mm]aps? `\w+`)([^.:;]*)", text):
            found |= set(re.findall(r"(?:nn\.)?([A-Z][A-Za-z0-9]*(?:Model|LMHeadModel|Classification|Layer|"
                                    r"Transformer|CausalLM))\b", m.group(1)))
    return found


def test_the_docs_claim_only_tested_references():
    claimed = _claimed_classes()
    assert {"ViTModel", "BertModel", "GPT2Model"} <= claimed        # the scan finds the claims
    assert claimed <= {c[0] for c in CLAIMS}, f"claimed but not tested: {claimed - {c[0] for c in CLAIMS}}"


def test_a_part_the_spec_leaves_out_is_named_when_loading():
    """ViTModel's pooler into the spec with the pooler off: the error says which switch leaves it out."""
    with torch.device("meta"):
        ref = T.ViTModel(T.ViTConfig())
    with pytest.raises(WeightMapError, match=r"pooler\.weight.*left out.*`pooler` is false"):
        convert_state_dict(spec("vit-b16", head=False), ref.state_dict(), "hf")
