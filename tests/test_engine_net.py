"""Net-level rules of CompiledNet that Caffe's Net defines: NetState filtering, blob wiring by
name (in-place tops, implicit splits), loss weights, shared and frozen parameters,
propagate_down, force_backward, and which blobs are net outputs."""

from __future__ import annotations

import re

import pytest
import torch

from replicate.errors import ReplicateError
from replicate.io.prototxt import parse_text
from replicate.net.compile import CompiledNet
from replicate.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
IP = 'inner_product_param {{ num_output: {n} weight_filler {{ type: "gaussian" std: 0.5 }} }}'


def net(text: str, phase: int = TEST, **kw) -> CompiledNet:
    return CompiledNet(parse_text(text, caffe_pb2.NetParameter(), "<net>"), phase, **kw)


DATA = 'layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }\n'


def test_engine_netstate_rules_pick_layers_like_caffe() -> None:
    text = DATA + "\n".join(
        f'layer {{ name: "{n}" type: "ReLU" bottom: "x" top: "{n}" {rule} }}'
        for n, rule in [
            ("train", "include { phase: TRAIN }"),
            ("test", "include { phase: TEST }"),
            ("not_test", "exclude { phase: TEST }"),
            ("lvl", "include { min_level: 2 }"),
            ("staged", 'include { stage: "deploy" }'),
            ("unstaged", 'include { not_stage: "deploy" }'),
            ("either", 'include { phase: TRAIN } include { stage: "deploy" }'),
        ]
    )
    assert net(text, TRAIN).layer_names == ["in", "train", "not_test", "unstaged", "either"]
    assert net(text, TEST, level=2, stages=["deploy"]).layer_names == ["in", "test", "lvl", "staged", "either"]
    with pytest.raises(ReplicateError, match="'bad'.*not both"):
        net(DATA + 'layer { name: "bad" type: "ReLU" bottom: "x" top: "z" include { phase: TEST } exclude { phase: TRAIN } }')


def test_engine_layer_phase_overrides_the_nets_like_caffe() -> None:
    """Net::Init sets the net's phase only on layers with no `phase` of their own: a Dropout
    marked TRAIN drops in a TEST net, one marked TEST passes everything in a TRAIN net."""
    text = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 64 } } }\n' + (
        'layer { name: "d" type: "Dropout" bottom: "x" top: "d" phase: PHASE dropout_param { dropout_ratio: 0.5 } }'
    )
    torch.manual_seed(0)
    x = torch.ones(4, 64)
    dropped = net(text.replace("PHASE", "TRAIN"), TEST)({"x": x}).outputs["d"]
    assert set(dropped.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(net(text.replace("PHASE", "TEST"), TRAIN)({"x": x}).outputs["d"], x)


def test_engine_inplace_top_is_the_value_every_later_reader_sees() -> None:
    n = net(DATA + f"""
layer {{ name: "a.b" type: "InnerProduct" bottom: "x" top: "h" {IP.format(n=4)} }}
layer {{ name: "relu" type: "ReLU" bottom: "h" top: "h" }}
layer {{ name: "first" type: "Eltwise" bottom: "h" bottom: "h" top: "twice" }}
layer {{ name: "after" type: "Eltwise" bottom: "h" bottom: "twice" top: "out" loss_weight: 1 }}""")
    x = torch.randn(2, 3)
    r = n({"x": x})
    w = n.layer("a.b").blobs[0]
    h = x @ w.t() + n.layer("a.b").blobs[1]
    torch.testing.assert_close(r.blobs["twice"], 2 * torch.relu(h))
    torch.testing.assert_close(r.blobs["out"], 3 * torch.relu(h))
    g = torch.autograd.grad(r.loss, w)[0]
    torch.testing.assert_close(g, (3 * (h > 0).float()).t() @ x)
    assert r.outputs.keys() == {"out", "y"}


def test_engine_inplace_after_another_reader_is_refused_as_caffe_refuses_it() -> None:
    """Caffe's InsertSplits gives the in-place layer a Split top of its own to read, so its top is
    a second blob of that name and Net::Init aborts (golden: refused_in_place_after_readers)."""
    with pytest.raises(ReplicateError, match="produced by multiple sources"):
        net(DATA + f"""
layer {{ name: "a.b" type: "InnerProduct" bottom: "x" top: "h" {IP.format(n=4)} }}
layer {{ name: "first" type: "Eltwise" bottom: "h" bottom: "h" top: "twice" }}
layer {{ name: "relu" type: "ReLU" bottom: "h" top: "h" }}
layer {{ name: "after" type: "Eltwise" bottom: "h" bottom: "twice" top: "out" loss_weight: 1 }}""")


def test_engine_loss_weights_default_to_first_top_of_loss_types() -> None:
    body = DATA + f"""
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "s" {IP.format(n=4)} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" top: "loss" top: "prob" WEIGHTS }}
layer {{ name: "reg" type: "InnerProduct" bottom: "x" top: "r" loss_weight: 0.5 {IP.format(n=1)} }}"""
    # Caffe's LossLayer adds one default weight and SetLossWeights wants one per top: it aborts.
    with pytest.raises(ReplicateError, match=r"layer 'loss' \(SoftmaxWithLoss\): has 2 top blobs and no loss_weight"):
        net(body.replace("WEIGHTS", ""))
    assert net(body.replace("WEIGHTS", "")
               .replace(' top: "prob"', "")).loss_weights == [[0.0, 0.0], [0.0], [1.0], [0.5]]
    n = net(body.replace("WEIGHTS", "loss_weight: 1 loss_weight: 0"))
    assert n.loss_weights == [[0.0, 0.0], [0.0], [1.0, 0.0], [0.5]]
    assert n.blob_loss_weights == {"loss": 1.0, "r": 0.5}
    r = n({"x": torch.randn(2, 3), "y": torch.tensor([0.0, 3.0])})
    torch.testing.assert_close(r.loss, r.blobs["loss"] + 0.5 * r.blobs["r"].sum())
    assert list(r.outputs) == ["loss", "prob", "r"]  # Caffe's sorted net-output order


def test_engine_shared_params_are_one_learnable_blob_with_owner_multipliers() -> None:
    shared = 'param { name: "w" lr_mult: 3 } param { name: "b" }'
    n = net(DATA + f"""
layer {{ name: "one" type: "InnerProduct" bottom: "x" top: "p" {shared} {IP.format(n=3)} }}
layer {{ name: "two" type: "InnerProduct" bottom: "p" top: "q" param {{ name: "w" decay_mult: 2 }} param {{ name: "b" }} {IP.format(n=3)} }}""")
    entries = n.learnable_params()
    assert [(e.layer, e.index, e.lr_mult, e.decay_mult) for e in entries] == [("one", 0, 3.0, 2.0), ("one", 1, 1.0, 1.0)]
    blobs = n.layer_blobs()
    assert blobs["one"][0] is blobs["two"][0] and blobs["one"][1] is blobs["two"][1]
    with pytest.raises(ReplicateError, match="cannot share param 'w'.*shape"):
        net(DATA + f"""
layer {{ name: "one" type: "InnerProduct" bottom: "x" top: "p" param {{ name: "w" }} {IP.format(n=3)} }}
layer {{ name: "two" type: "InnerProduct" bottom: "p" top: "q" param {{ name: "w" }} {IP.format(n=2)} }}""")


def test_engine_frozen_params_and_propagate_down_cut_gradients() -> None:
    n = net(DATA + f"""
layer {{ name: "frozen" type: "InnerProduct" bottom: "x" top: "a" param {{ lr_mult: 0 }} param {{ lr_mult: 0 }} {IP.format(n=4)} }}
layer {{ name: "cut" type: "InnerProduct" bottom: "a" top: "b" {IP.format(n=4)} }}
layer {{ name: "top" type: "InnerProduct" bottom: "b" top: "c" propagate_down: false {IP.format(n=5)} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "c" bottom: "y" top: "loss" }}""")
    frozen, cut, top = (n.layer(k).blobs[0] for k in ("frozen", "cut", "top"))
    assert not frozen.requires_grad and cut.requires_grad
    assert [e.layer for e in n.learnable_params()] == ["frozen", "frozen", "cut", "cut", "top", "top"]
    r = n({"x": torch.randn(2, 3), "y": torch.tensor([1.0, 2.0])})
    g_cut, g_top = torch.autograd.grad(r.loss, [cut, top], allow_unused=True)
    assert g_cut is None and g_top is not None and g_top.abs().sum() > 0
    assert n.backward_plan.layer_needs == [False, False, False, True, True]


def test_engine_a_reader_that_sends_no_gradient_cuts_only_its_own_split_like_caffe() -> None:
    """An Accuracy on the scores of a train net (and a Silence on a hidden blob) sends no gradient;
    Caffe's InsertSplits gives it a Split top of its own, so the layers below still learn.  Decided
    on the unsplit net, every layer below the scores froze (golden: solver_sgd_split_readers)."""
    n = net(DATA + f"""
layer {{ name: "ip1" type: "InnerProduct" bottom: "x" top: "h" {IP.format(n=4)} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "h" top: "s" {IP.format(n=5)} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" top: "loss" }}
layer {{ name: "acc" type: "Accuracy" bottom: "s" bottom: "y" top: "acc" }}
layer {{ name: "side" type: "Silence" bottom: "h" }}""")
    assert n.backward_plan.layer_needs == [False, True, True, True, False, False]
    r = n({"x": torch.randn(2, 3), "y": torch.tensor([1.0, 2.0])})
    grads = torch.autograd.grad(r.loss, [n.layer("ip1").blobs[0], n.layer("ip2").blobs[0]], allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_engine_force_backward_gives_input_blobs_gradients() -> None:
    body = f"""
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "s" {IP.format(n=4)} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" top: "loss" }}"""
    assert not net(DATA + body).backward_plan.blob_gets_diff["x"]
    plan = net("force_backward: true\n" + DATA + body).backward_plan
    assert plan.blob_gets_diff["x"] and not plan.blob_gets_diff["y"]


def test_engine_training_refuses_gradients_caffes_backward_cannot_give() -> None:
    """Caffe's first Backward aborts (seen with pycaffe 9b89154): an Accuracy with a loss_weight
    over a learned layer ("Not Implemented Yet"), a loss layer asked by propagate_down for its
    labels' gradient ("cannot backpropagate to label inputs").  Here the accuracy was added to the
    loss with no gradient, and the labels silently got none."""
    ip = f'layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "s" {IP.format(n=4)} }}\n'
    loss = 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" top: "loss" '
    accuracy = 'layer { name: "acc" type: "Accuracy" bottom: "s" bottom: "y" top: "acc" '
    with pytest.raises(ReplicateError, match=r"^layer 'acc' \(Accuracy\): has no backward .* bottom 0 's' .* "
                       "Caffe's Backward aborts$"):
        net(DATA + ip + accuracy + "loss_weight: 1 }", TRAIN).check_trainable()
    with pytest.raises(ReplicateError, match=r"^layer 'loss' \(SoftmaxWithLoss\): cannot backpropagate to its "
                       r"labels, but the net's backward needs a gradient for bottom 1 'y'"):
        net(DATA + ip + loss + "propagate_down: true propagate_down: true }", TRAIN).check_trainable()
    # Where Caffe's backward never reaches them, they train: Accuracy with no loss_weight, or one
    # over an input nothing learns from; force_backward does not ask a loss layer for its labels.
    net(DATA + ip + loss + "}\n" + accuracy + "}", TRAIN).check_trainable()
    net(DATA + accuracy.replace('"s"', '"x"') + "loss_weight: 1 }", TRAIN).check_trainable()
    net("force_backward: true\n" + DATA + ip + loss + "}", TRAIN).check_trainable()


def test_engine_bad_wiring_and_inputs_are_named() -> None:
    with pytest.raises(ReplicateError, match="layer 'r' \\(ReLU\\): unknown bottom blob 'nope'"):
        net(DATA + 'layer { name: "r" type: "ReLU" bottom: "nope" top: "z" }')
    with pytest.raises(ReplicateError, match="layer 'r2' \\(ReLU\\): top blob 'z' is produced by multiple sources"):
        net(DATA + 'layer { name: "r" type: "ReLU" bottom: "x" top: "z" } layer { name: "r2" type: "ReLU" bottom: "x" top: "z" }')
    with pytest.raises(ReplicateError, match="layer name 'r' is used twice"):
        net(DATA + 'layer { name: "r" type: "ReLU" bottom: "x" top: "z" } layer { name: "r" type: "ReLU" bottom: "z" top: "z" }')
    with pytest.raises(ReplicateError, match=r"layer 'ip' \(InnerProduct\): 1 blob\(s\) in the net definition"):
        net(DATA + 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "z" inner_product_param { num_output: 1 '
            'bias_term: false } blobs { shape { dim: 1 dim: 3 } data: 1 data: 2 data: 3 } }')
    with pytest.raises(ReplicateError, match=r"layer 'ip' \(InnerProduct\): has 2 param specs for 1 parameter blob"):
        net(DATA + 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "z" param { lr_mult: 1 } '
            'param { lr_mult: 2 } inner_product_param { num_output: 1 bias_term: false } }')
    with pytest.raises(ReplicateError, match=r"^layer 'ip' \(InnerProduct\): unknown filler type 'gausian'"):
        net(DATA + 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "z" '
            'inner_product_param { num_output: 1 weight_filler { type: "gausian" } } }')
    with pytest.raises(ReplicateError, match=r"inputs \['q'\]"):
        net(DATA)({"q": torch.zeros(1)})


def test_engine_batchnorm_statistics_are_frozen_in_the_net() -> None:
    n = net(DATA + 'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x" }', TRAIN)
    assert [(e.layer, e.lr_mult) for e in n.learnable_params()] == [("bn", 0.0)] * 3
    assert not any(p.requires_grad for p in n.layer_blobs()["bn"])


def test_engine_net_accepts_another_batch_size_than_declared() -> None:
    n = net(DATA + f"""
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "s" {IP.format(n=4)} }}
layer {{ name: "acc" type: "Accuracy" bottom: "s" bottom: "y" top: "acc" }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" top: "loss" }}""")
    r = n({"x": torch.randn(5, 3), "y": torch.tensor([0.0, 1, 2, 3, 0])})
    assert r.blobs["s"].shape == (5, 4) and r.loss.shape == ()


def test_engine_net_refuses_another_image_size_than_compiled() -> None:
    # A global pooling's kernel is the bottom's size at compile time: fed 6x6 instead of 4x4 it
    # would pool 4x4 windows into a 3x3 output where Caffe, reshaping, pools everything to 1x1.
    n = net('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 4 dim: 4 } } }\n'
            'layer { name: "g" type: "Pooling" bottom: "x" top: "g" pooling_param { pool: AVE global_pooling: true } }')
    assert n({"x": torch.ones(3, 2, 4, 4)}).outputs["g"].shape == (3, 2, 1, 1)
    for shape in ((1, 2, 6, 6), (1, 3, 4, 4), (2, 4, 4)):
        with pytest.raises(ReplicateError, match=re.escape(
                f"input 'x' has shape {shape}, the net was compiled for (1, 2, 4, 4); only the batch size")):
            n({"x": torch.ones(shape)})
    # Another batch size runs, except through a learned Scale over the batch axis: Caffe's Reshape
    # stops there, and a batch-1 blob would broadcast.
    s = net('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }\n'
            'layer { name: "s" type: "Scale" bottom: "x" top: "y" scale_param { axis: 0 num_axes: 1 } }')
    assert s({"x": torch.ones(1, 2)}).outputs["y"].shape == (1, 2)
    with pytest.raises(ReplicateError, match=re.escape("layer 's' (Scale): its blob spans the batch axis (1); fed a batch of 3")):
        s({"x": torch.ones(3, 2)})
    with pytest.raises(ReplicateError, match=r"layer 'in' \(Input\): shape \(1, 0, 4\) has a dimension that is not"):
        net('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 0 dim: 4 } } }')


def test_engine_test_net_shares_trained_layers_by_name() -> None:
    body = DATA + f"""
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "s" {IP.format(n=4)} }}
layer {{ name: "drop" type: "Dropout" bottom: "s" top: "s" include {{ phase: TRAIN }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" top: "loss" }}"""
    train, test = net(body, TRAIN), net(body, TEST)
    test.share_trained_layers_with(train)
    assert test.layer("ip").blobs[0] is train.layer("ip").blobs[0]
    assert test.learnable_params()[0].param is train.learnable_params()[0].param
    with torch.no_grad():
        train.layer("ip").blobs[1].fill_(3.0)
    x = torch.randn(2, 3)
    torch.testing.assert_close(test({"x": x}).blobs["s"], x @ train.layer("ip").blobs[0].detach().t() + 3.0)
    other = net(DATA + f'layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "s" {IP.format(n=5)} }}')
    with pytest.raises(ReplicateError, match="'ip'.*cannot share blob 0"):
        other.share_trained_layers_with(train)


def test_engine_loss_layer_without_top_gets_an_anonymous_one_like_caffe() -> None:
    """2014 nets write `SoftmaxWithLoss` with no top: Caffe's AutoTopBlobs still counts the loss."""
    n = net(DATA + f"""
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "s" {IP.format(n=4)} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" }}""", TRAIN)
    r = n({"x": torch.randn(2, 3), "y": torch.tensor([0.0, 3.0])})
    assert r.outputs == {}
    assert r.loss > 0 and r.loss.requires_grad
    assert n.backward_plan.layer_needs == [False, True, True]


def test_engine_deprecated_input_fields_become_input_blobs() -> None:
    n = net('input: "x" input_shape { dim: 2 dim: 3 }\n' + f"""
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "s" {IP.format(n=4)} }}""")
    assert n.blob_shapes["x"] == (2, 3)
    assert n({"x": torch.ones(2, 3)}).outputs["s"].shape == (2, 4)
