"""Progress bars: on stderr when it is a terminal (a fake TTY here), for building per layer, loading
weights per tensor and writing ONNX external data per tensor; none with --quiet, none through a pipe, and
nothing from library calls."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

import graphformer
from graphformer.cli import main
from graphformer.commands import progress

ROOT = Path(__file__).resolve().parents[2]
GPT2 = str(ROOT / "specs" / "gpt2.yaml")


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def _run(monkeypatch, argv, tty: bool) -> tuple[int, str, str]:
    out, err = _Stream(False), _Stream(tty)
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.setattr(progress, "DELAY_S", 0)   # the tiny model is quick: show the bar at once
    monkeypatch.delenv("TERM", raising=False)
    rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def test_build_shows_progress_per_layer_on_a_terminal(monkeypatch):
    rc, out, err = _run(monkeypatch, ["build", GPT2, "--preset", "tiny"], tty=True)
    assert rc == 0 and "building gpt2" in err and "layer" in err and "\r" in err
    assert "initialising gpt2" in err and "tensor" in err
    assert "building" not in out   # stdout never carries a bar


def test_quiet_and_pipes_show_none_and_leave_output_unchanged(monkeypatch):
    argv = ["build", GPT2, "--preset", "tiny"]
    runs = [_run(monkeypatch, argv + ["--quiet"], tty=True), _run(monkeypatch, argv, tty=False)]
    for rc, out, err in runs:
        assert rc == 0 and err == "" and "built in" in out
    assert runs[0][1].split("built in")[0] == runs[1][1].split("built in")[0]


def test_loading_weights_shows_progress_per_tensor(monkeypatch, tmp_path):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import save_file
    p = graphformer.load(GPT2, preset="tiny").params
    ref = transformers.GPT2Model(transformers.GPT2Config(vocab_size=p["vocab"], n_positions=p["max_len"],
                                                         n_embd=p["d_model"], n_layer=p["layers"], n_head=p["heads"]))
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "model.safetensors")
    rc, out, err = _run(monkeypatch, ["build", GPT2, "--preset", "tiny", "--weights",
                                      str(tmp_path / "model.safetensors"), "--weights-map", "hf"], tty=True)
    assert rc == 0 and "loading weights" in err and "tensor" in err, err


def test_onnx_external_data_shows_progress(tmp_path):
    pytest.importorskip("onnx")
    spec = graphformer.load(GPT2, preset="tiny")
    err = _Stream(True)
    with progress.reporting(None, stream=err, force=True, delay=0):
        written = graphformer.export_onnx(spec, None, str(tmp_path / "m.onnx"), external_data_threshold=0)
    assert written.data_path and "writing m.onnx's weights" in err.getvalue()


def test_library_calls_are_silent(capsys):
    graphformer.build(graphformer.load(GPT2, preset="tiny"), seed=0)
    assert capsys.readouterr().err == ""
