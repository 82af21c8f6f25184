"""Shared by the parity tests: build our module with a reference's weights, compare within the bound."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import graphformer
from graphformer.backends.torch.weights import load_weights
from graphformer.weights.maps import convert_state_dict

ERRORS: dict[str, float] = {}   # measured max abs errors by output, printed with `pytest -s` for docs/models.md


def randomize(ref: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter perturbed, so norm scales (init 1), biases (init 0), zero-initialised tables and ties
    all carry information; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return ref.eval()


def ours(spec_, ref: nn.Module, mapping: str = "hf") -> nn.Module:
    """Our build of `spec_` holding the reference's weights, loaded through the spec's weight map."""
    module = graphformer.build(spec_, seed=1).eval()
    load_weights(module, ref.state_dict(), mapping)
    return module


def imported(ref: nn.Module, directory, capsys):
    """`graphformer import hf` on the reference's save_pretrained directory (no warning, no traceback), and our
    build of the spec it writes holding the checkpoint's weights through the `hf` map: (spec, module)."""
    from graphformer.cli import main
    from graphformer.weights.maps import read_state_dict
    ref.save_pretrained(directory / "ckpt")
    rc = main(["import", "hf", str(directory / "ckpt"), "-o", str(directory / "spec.yaml")])
    out, err = capsys.readouterr()
    assert rc == 0 and "warning" not in err and "Traceback" not in out + err, err
    spec_ = graphformer.load(directory / "spec.yaml")
    module = graphformer.build(spec_).eval()
    load_weights(module, read_state_dict(str(directory / "ckpt")), "hf", spec_)
    return spec_, module


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """fp32 parity: max abs error ≤ 1e-5 × max(1, output scale)."""
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} vs reference {tuple(want.shape)}"
    err = (got - want).abs().max().item()
    tol = 1e-5 * max(1.0, want.abs().max().item())
    ERRORS[what] = err
    print(f"{what}: max abs error {err:.3g} (output scale {want.abs().max().item():.3g})")
    assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"


def checked_onnx(spec_, model, **export):
    """`to_onnx(spec_, model, **export)`, passed by onnx's full checker (shapes and types inferred through every
    node); skips the test where onnx is not installed."""
    onnx = pytest.importorskip("onnx")
    from graphformer.backends.onnx import to_onnx
    exported = to_onnx(spec_, model, **export)
    try:
        onnx.checker.check_model(exported, full_check=True)
    except onnx.checker.ValidationError as e:
        raise AssertionError(f"the ONNX export fails onnx's full check: {e}") from e
    return exported


def onnx_session(model_proto):
    """An ONNX Runtime CPU session of an in-memory model; skips the test where onnxruntime is not installed."""
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(model_proto.SerializeToString(), providers=["CPUExecutionProvider"])


def ort_session(spec_, model, **export):
    """Export `model` (our build of `spec_`; `export`: to_onnx's keywords), check it fully, open a CPU session."""
    return onnx_session(checked_onnx(spec_, model, **export))


def assert_ort_close(sess, feeds: dict, want: dict, what: str) -> None:
    """An ONNX Runtime session's outputs named in `want`, fed `feeds` (name → tensor), each equal `want`'s."""
    got = sess.run(list(want), {k: v.numpy() for k, v in feeds.items()})
    for (name, w), g in zip(want.items(), got):
        assert_close(torch.from_numpy(g), w, f"{what} {name}")


def assert_ort_equals_reference(spec_, ref: nn.Module, batches, outputs, what: str) -> None:
    """The export of our build of `spec_` holding `ref`'s weights, fed each of `batches` (input name → tensor, the
    names both sides call them), gives the reference's `outputs` (attributes of its output)."""
    sess = ort_session(spec_, ours(spec_, ref))
    for feeds in batches:
        with torch.no_grad():
            got = ref(**feeds)
        batch = next(iter(feeds.values())).shape[0]
        assert_ort_close(sess, feeds, {k: getattr(got, k) for k in outputs}, f"{what} B={batch}")


def assert_onnx_logits(model_proto, ids, mask, want: torch.Tensor, what: str) -> None:
    """ONNX Runtime's logits of an exported LM fed `tokens` and a left-padding `mask` equal `want` on the real
    tokens (padded positions' outputs are meaningless)."""
    sess = onnx_session(model_proto)
    got = torch.from_numpy(sess.run(["logits"], {"tokens": ids.numpy(), "mask": mask.numpy()})[0])
    keep = mask.bool()
    assert_close(got[keep], want[keep], what)


def prompts(b=3, n=8, padded=False):
    """[b, n] token ids below 97, and (padded) a left-padding mask with rows of 0, 3 and 1 pads."""
    ids = torch.randint(0, 97, (b, n), generator=torch.Generator().manual_seed(3))
    if not padded:
        return ids, None
    mask = torch.ones(b, n, dtype=torch.long)
    mask[1, :3] = 0
    mask[2, :1] = 0
    return ids, mask


def lm_batch(vocab=97, b=3, n=11):
    """[b, n] token ids and a left-padding mask (rows of 0, 4 and 1 pads), as generation batches prompts."""
    ids = torch.randint(0, vocab, (b, n), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(b, n, dtype=torch.long)
    mask[1, :4] = 0
    mask[2, :1] = 0
    return ids, mask


def assert_lm_logits(model: nn.Module, ref: nn.Module, ids, mask, what: str) -> None:
    """A causal LM's logits equal the reference's without a mask, and on the real tokens with one (padded
    positions' outputs are meaningless in both)."""
    with torch.no_grad():
        assert_close(model(tokens=ids)["logits"], ref(input_ids=ids).logits, f"{what} logits")
        got = model(tokens=ids, mask=mask)["logits"]
        want = ref(input_ids=ids, attention_mask=mask).logits
    keep = mask.bool()
    assert_close(got[keep], want[keep], f"{what} logits, left-padded")


def assert_lm_grads(model: nn.Module, ref: nn.Module, spec_, ids, what: str, mask=None,
                    none_is_zero: bool = False) -> None:
    """The gradients of a fixed random projection of a causal LM's logits (of the real tokens where a left-padding
    mask is given) equal the reference's, brought through the spec's `hf` map, which must name every one of
    our parameters. none_is_zero: a parameter the step left without a gradient (an expert no token picked)
    counts as zeros, on either side."""
    model.zero_grad(), ref.zero_grad()
    got = model(tokens=ids, **({} if mask is None else {"mask": mask}))["logits"]
    want = ref(input_ids=ids, **({} if mask is None else {"attention_mask": mask})).logits
    if mask is not None:
        got, want = got[mask.bool()], want[mask.bool()]
    weight = torch.randn(want.shape[-1], generator=torch.Generator().manual_seed(2))
    (got * weight).sum().backward()
    (want * weight).sum().backward()
    assert_mapped_grads(model, ref, spec_, what, none_is_zero=none_is_zero)


def assert_mapped_grads(model: nn.Module, ref: nn.Module, spec_, what: str, mapping: str = "hf",
                        none_is_zero: bool = False) -> None:
    """Called after the same backward pass through both: the reference's gradients, brought through the spec's
    `mapping` weight map, which must name every one of our parameters and nothing else, equal ours tensor for
    tensor. none_is_zero: a parameter the pass left without a gradient counts as zeros, on either side (an
    expert no token picked); otherwise a missing gradient fails, naming the parameter."""
    theirs = convert_state_dict(spec_, {k: _grad(p, none_is_zero, f"{what} reference {k}")
                                        for k, p in ref.named_parameters()}, mapping)
    mine = dict(model.named_parameters())
    assert set(theirs) == set(mine), (f"{what}: the map's gradients and our parameters differ: only the map's "
                                      f"{sorted(set(theirs) - set(mine))}, only ours {sorted(set(mine) - set(theirs))}")
    for k, g in theirs.items():
        assert_close(_grad(mine[k], none_is_zero, f"{what} {k}"), g, f"{what} grad {k}")


def _grad(p: torch.Tensor, none_is_zero: bool, what: str) -> torch.Tensor:
    assert p.grad is not None or none_is_zero, f"{what}: no gradient"
    return torch.zeros_like(p) if p.grad is None else p.grad


def assert_cached_steps(model: nn.Module, ids, mask, new: int, what: str, mask_input: str = "mask"):
    """Each step of the cached decoder, fed graphformer.generate's greedy tokens one at a time, gives the
    last position's logits of a full recompute over the sequence so far (fed the mask as spec input
    `mask_input`). Returns the decoder."""
    from graphformer.backends.torch.generation import Decoder
    seq = graphformer.generate(model, ids, new, mask=mask)
    b, n = ids.shape
    dec = Decoder(model, b, seq.shape[1])
    with torch.no_grad():
        steps = [dec.prompt(ids, mask)] + [dec.step(seq[:, t]) for t in range(n, seq.shape[1] - 1)]
        for t, got in enumerate(steps, start=n):
            feed = {"tokens": seq[:, :t]}
            if mask is not None:
                feed[mask_input] = torch.cat([mask, torch.ones(b, t - n, dtype=torch.long)], dim=1)
            assert_close(got, model(**feed)["logits"][:, -1], f"{what} step {t}")
    return dec


def hf_greedy(ref: nn.Module, ids, mask, new: int) -> torch.Tensor:
    """transformers' greedy `generate`: [b, n + new], the prompt included. Every one of the `new` steps runs
    (no EOS: random weights say nothing of it); pad id 0, which a left-padded batch needs."""
    ref.generation_config.eos_token_id = None
    ref.generation_config.pad_token_id = 0
    with torch.no_grad():
        return ref.generate(ids, attention_mask=torch.ones_like(ids) if mask is None else mask,
                            max_new_tokens=new, do_sample=False)


def assert_same_tokens(got, want, what: str) -> None:
    """Exact equality of two [b, t] token arrays (tensors or numpy); a miss names the first differing row and
    position and shows both rows."""
    got, want = torch.as_tensor(got), torch.as_tensor(want)
    assert got.shape == want.shape, f"{what}: {tuple(got.shape)} tokens vs reference {tuple(want.shape)}"
    diff = (got != want).nonzero()
    if len(diff):
        row, pos = diff[0].tolist()
        raise AssertionError(f"{what}: tokens differ first at row {row}, position {pos}:\n"
                             f"  ours      {got[row].tolist()}\n  reference {want[row].tolist()}")


def assert_greedy_tokens(model: nn.Module, ref: nn.Module, ids, mask, new: int, what: str) -> torch.Tensor:
    """graphformer.generate's greedy tokens equal transformers' token for token: exactly `new` of them after
    the prompt (which both return unchanged); `mask` is None or a left-padding mask. Returns ours."""
    got = graphformer.generate(model, ids, new, mask=mask)
    assert got.shape == (ids.shape[0], ids.shape[1] + new), f"{what}: {tuple(got.shape)} tokens for {new} new"
    assert_same_tokens(got, hf_greedy(ref, ids, mask, new), what)
    return got
