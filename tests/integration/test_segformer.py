"""Parity of specs/segformer.yaml (overlapping patch embeddings, spatial-reduction attention and a depthwise
Mix-FFN, written with `conv2d`) with transformers' SegformerModel, and, with `head`, of its all-MLP decode
head (each stage projected, upsampled bilinearly to the first stage's grid with `interpolate`, concatenated,
fused by a 1×1 conv, batch norm and ReLU, classified by a 1×1 conv) with SegformerForSemanticSegmentation.

References are built offline from a small odd config with random weights, every parameter perturbed (so no
bias is 0 and no norm scale 1): a 45-pixel image (grids of 12, 6, 3 and 2 per side: every conv rounds
down), widths 8/12/20/24 over 1/2/4/3 heads, depths 1/2/1/1, reductions 4/2/2/1, MLP ratio 2. fp32, eval
mode, max abs error ≤ 1e-5 × the output's scale: the last hidden state and every stage's, forward and every
parameter's gradient; ONNX Runtime against the reference at two batch sizes. At nvidia/mit-b0's config
(SegformerConfig's defaults), on the meta device: the parameter count equals the reference's and the
weight map covers its whole state dict. The decode head at decoder width 20 and 7 labels, its batch norm's
running statistics perturbed too: logits in eval mode, gradients, ONNX Runtime; in training mode (dropout
0) the logits and the running statistics after a step; at nvidia/segformer-b0-finetuned-ade-512-512's
config on the meta device, the parameter count and the map.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
T = pytest.importorskip("transformers")

from graphformer.analysis.summary import total_params  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402
from graphformer.weights.maps import convert_state_dict  # noqa: E402
from parity import assert_close, assert_mapped_grads, assert_ort_equals_reference, ours, randomize  # noqa: E402

T.logging.set_verbosity_error()

SPEC = "specs/segformer.yaml"
SMALL = dict(hidden_sizes=[8, 12, 20, 24], num_attention_heads=[1, 2, 4, 3], depths=[1, 2, 1, 1],
             sr_ratios=[4, 2, 2, 1], mlp_ratios=[2, 2, 2, 2])
OVERRIDES = dict(image=45, hidden1=8, hidden2=12, hidden3=20, hidden4=24, heads1=1, heads2=2, heads3=4, heads4=3,
                 depth1=1, depth2=2, depth3=1, depth4=1, sr1=4, sr2=2, sr3=2, mlp_ratio=2)
STAGES = ("hidden_states_0", "hidden_states_1", "hidden_states_2", "last_hidden_state")


def reference():
    return randomize(T.SegformerModel(T.SegformerConfig(**SMALL)))


def spec():
    return load(SPEC, overrides=OVERRIDES)


def image(batch: int = 2, seed: int = 1):
    return torch.randn(batch, 3, 45, 45, generator=torch.Generator().manual_seed(seed))


def test_published_count_and_map_equal_the_reference():
    with torch.device("meta"):
        ref = T.SegformerModel(T.SegformerConfig())     # nvidia/mit-b0
    s = load(SPEC)
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == 3_319_392
    converted = convert_state_dict(s, ref.state_dict(), "hf")   # every key used, every parameter set
    assert sum(v.numel() for v in converted.values()) == 3_319_392


@pytest.mark.parametrize("batch", [1, 2])
def test_forward_equals_transformers(batch):
    ref = reference()
    model = ours(spec(), ref)
    x = image(batch)
    with torch.no_grad():
        got = model(pixel_values=x)
        want = ref(pixel_values=x, output_hidden_states=True)
    assert_close(got["last_hidden_state"], want.last_hidden_state, f"segformer B={batch}")
    for name, hidden in zip(STAGES, want.hidden_states):
        assert_close(got[name], hidden, f"segformer {name} B={batch}")


def test_gradients_equal_transformers():
    s, ref = spec(), reference()
    model = ours(s, ref)
    x = image(2)
    weight = torch.randn(24, 1, 1, generator=torch.Generator().manual_seed(3))
    (model(pixel_values=x)["last_hidden_state"] * weight).sum().backward()
    (ref(pixel_values=x).last_hidden_state * weight).sum().backward()
    assert_mapped_grads(model, ref, s, "segformer")


def test_onnx_runtime_equals_transformers():
    assert_ort_equals_reference(spec(), reference(), [{"pixel_values": image(b, seed=b)} for b in (1, 3)],
                                ["last_hidden_state"], "segformer onnx")


# ---------------------------------------------------------------- the decode head (SegformerForSemanticSegmentation)

HEAD = dict(decoder_hidden_size=20, num_labels=7)


def seg_reference(dropout: float = 0.1):
    # in training, the reference's stochastic depth (drop_path_rate) would drop layers at random: off with dropout
    ref = T.SegformerForSemanticSegmentation(T.SegformerConfig(**SMALL, **HEAD, classifier_dropout_prob=dropout,
                                                               drop_path_rate=min(dropout, 0.1)))
    randomize(ref)
    bn = ref.decode_head.batch_norm
    with torch.no_grad():   # running statistics that are not the initial ones
        bn.running_mean.uniform_(-1, 1, generator=torch.Generator().manual_seed(5))
        bn.running_var.uniform_(0.5, 2, generator=torch.Generator().manual_seed(6))
    return ref


def seg_spec(dropout: float = 0.1):
    return load(SPEC, overrides={**OVERRIDES, "head": True, "decoder": 20, "labels": 7, "head_dropout": dropout})


def test_published_segmentation_count_and_map_equal_the_reference():
    with torch.device("meta"):
        ref = T.SegformerForSemanticSegmentation(T.SegformerConfig(num_labels=150))   # segformer-b0-finetuned-ade
    s = load(SPEC, preset="segformer-b0-ade")
    assert total_params(s.ir) == sum(p.numel() for p in ref.parameters()) == 3_752_694
    converted = convert_state_dict(s, ref.state_dict(), "hf")
    assert sum(v.numel() for v in converted.values()) == 3_752_694 + 2 * 256   # + the running statistics


@pytest.mark.parametrize("batch", [1, 2])
def test_logits_equal_transformers(batch):
    ref = seg_reference()
    model = ours(seg_spec(), ref)
    x = image(batch)
    with torch.no_grad():
        got = model(pixel_values=x)
        want = ref(pixel_values=x).logits
    assert got["logits"].shape == (batch, 7, 12, 12)
    assert_close(got["logits"], want, f"segformer logits B={batch}")


def test_segmentation_gradients_equal_transformers():
    s, ref = seg_spec(), seg_reference()
    model = ours(s, ref)
    x = image(2)
    weight = torch.randn(7, 12, 12, generator=torch.Generator().manual_seed(3))
    (model(pixel_values=x)["logits"] * weight).sum().backward()
    (ref(pixel_values=x).logits * weight).sum().backward()
    stats = {k: v for k, v in ref.state_dict().items() if "running" in k}   # state: the map wants it, not compared
    theirs = convert_state_dict(s, {**{k: p.grad for k, p in ref.named_parameters()}, **stats}, "hf")
    theirs = {k: v for k, v in theirs.items() if "running" not in k}
    mine = dict(model.named_parameters())
    assert set(theirs) == set(mine)
    for k, g in theirs.items():
        assert_close(mine[k].grad, g, f"grad {k}")


def test_training_step_equals_transformers():
    """Training mode, dropout and stochastic depth 0: batch statistics in the decode head's norm, the running ones updated alike."""
    s, ref = seg_spec(dropout=0.0), seg_reference(dropout=0.0)
    model = ours(s, ref)
    model.train(), ref.train()
    x = image(2, seed=4)
    assert_close(model(pixel_values=x)["logits"], ref(pixel_values=x).logits, "segformer train logits")
    assert_close(model.bn.running_mean, ref.decode_head.batch_norm.running_mean, "running_mean")
    assert_close(model.bn.running_var, ref.decode_head.batch_norm.running_var, "running_var")


def test_segmentation_onnx_runtime_equals_transformers():
    assert_ort_equals_reference(seg_spec(), seg_reference(), [{"pixel_values": image(b, seed=b)} for b in (1, 3)],
                                ["logits"], "segformer onnx")
