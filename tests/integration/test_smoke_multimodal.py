"""Training smoke tests for the specs without a reference implementation: perceiver-io,
vqa-cross-attention and co-attention. Each is built at its `tiny` preset, every parameter must get a
gradient (no part of the graph is cut off), and a few Adam steps on one fixed synthetic batch must
cut the loss well below where it started (a model that can't memorise 4 examples is broken)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import graphformer  # noqa: E402
from graphformer.frontend.api import load  # noqa: E402

STEPS, LR = 60, 1e-2


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread; on a busy machine, extra threads only contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def batch_and_loss(name: str, s, gen):
    b = 4
    p = s.params
    if name == "perceiver-io":
        x = {"inputs": torch.randn(b, 16, p["d_input"], generator=gen)}       # m = 16 input elements
        labels = torch.randint(0, p["d_out"], (b, p["out_queries"]), generator=gen)   # a class per query
        return x, lambda out: F.cross_entropy(out["outputs"].flatten(0, 1), labels.flatten())
    if name == "vqa-cross-attention":
        x = {"question_ids": torch.randint(0, p["vocab"], (b, 7), generator=gen),
             "pixel_values": torch.randn(b, p["channels"], p["image"], p["image"], generator=gen)}
        answers = torch.randint(0, p["answers"], (b,), generator=gen)
        return x, lambda out: F.cross_entropy(out["answer_logits"], answers)
    if name == "co-attention":
        mask = torch.ones(b, 9, dtype=torch.int64)
        mask[1, 6:] = mask[3, 4:] = 0                                         # two padded questions
        x = {"input_ids": torch.randint(0, p["vocab"], (b, 9), generator=gen), "attention_mask": mask,
             "visual_feats": torch.randn(b, 5, p["feat_dim"], generator=gen),
             "visual_pos": torch.rand(b, 5, 4, generator=gen)}
        pooled_t = 0.5 * torch.randn(b, p["d_model"], generator=gen)
        vision_t = torch.randn(b, 5, p["d_model"], generator=gen)
        # both carried streams reach the loss, so the last layer's image half is trained too
        return x, lambda out: F.mse_loss(out["pooled_output"], pooled_t) + F.mse_loss(out["vision_output"], vision_t)
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["perceiver-io", "vqa-cross-attention", "co-attention"])
def test_a_few_adam_steps_memorise_a_batch(name):
    s = load(f"specs/{name}.yaml", preset="tiny")
    torch.manual_seed(0)
    model = graphformer.build(s, seed=0).train()
    inputs, loss_fn = batch_and_loss(name, s, torch.Generator().manual_seed(1))
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    losses = []
    for step in range(STEPS):
        opt.zero_grad()
        loss = loss_fn(model(**inputs))
        loss.backward()
        if step == 0:
            dead = [n for n, q in model.named_parameters() if q.grad is None or not q.grad.abs().sum() > 0]
            assert not dead, f"parameters without gradient: {dead[:5]}"
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], f"{name}: loss {losses[0]:.4g} → {losses[-1]:.4g}"


def test_perceiver_cost_is_linear_in_the_input_length():
    """The point of the latent bottleneck: doubling m doubles the input-side FLOPs only (no m² term)."""
    from graphformer.analysis.summary import rows
    s = load("specs/perceiver-io.yaml")
    total = sum((r.flops for r in rows(s.ir)), start=graphformer.base.dims.Dim.const(0))
    f = [total.evaluate({"B": 1, "m": m}) for m in (1000, 2000, 4000)]
    assert f[2] - f[1] == 2 * (f[1] - f[0])
