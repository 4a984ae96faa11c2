"""Legacy Caffe formats to the current one, rule for rule as Caffe's `upgrade_proto.cpp`.

The authors' 2014 nets are V0 (`layers { layer { type: "conv" kernelsize: 11 ... } }`), the 2014
reference CaffeNet weights are V1 (`layers { type: CONVOLUTION blobs_lr: 1 ... }`).  Caffe reads
both by upgrading in this order: V0 -> V1 (padding layers folded into the next conv/pool, flat
fields moved into their parameter messages), data-transform fields -> `transform_param`,
V1 -> V2 (enum types -> strings, `blobs_lr`/`weight_decay` -> `param { lr_mult decay_mult }`),
`input:` fields -> an Input layer, 3-param BatchNorm -> frozen params.  Each step below is one
of those; `upgrade_net` runs them as `UpgradeNetAsNeeded` does.
"""

from __future__ import annotations

from replicate.errors import ReplicateError
from replicate.proto import caffe_pb2

V1 = caffe_pb2.V1LayerParameter

# ---------------------------------------------------------------- V0 -> V1

_V0_TYPES: dict[str, int] = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX, "softmax_loss": V1.SOFTMAX_LOSS,
    "split": V1.SPLIT, "tanh": V1.TANH, "window_data": V1.WINDOW_DATA,
}

# V0 field -> {V0 layer type: (V1 parameter message, field there, how)}; how is "set", "add"
# (repeated target) or "copy" (message).  A field set on a type missing here is one Caffe
# reports as incompatible; we refuse it, since silently dropping it would change the net.
_V0_FIELDS: dict[str, dict[str, tuple[str, str, str]]] = {
    "num_output": {"conv": ("convolution_param", "num_output", "set"),
                   "innerproduct": ("inner_product_param", "num_output", "set")},
    "biasterm": {"conv": ("convolution_param", "bias_term", "set"),
                 "innerproduct": ("inner_product_param", "bias_term", "set")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler", "copy"),
                      "innerproduct": ("inner_product_param", "weight_filler", "copy")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler", "copy"),
                    "innerproduct": ("inner_product_param", "bias_filler", "copy")},
    "pad": {"conv": ("convolution_param", "pad", "add"), "pool": ("pooling_param", "pad", "set")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size", "add"),
                   "pool": ("pooling_param", "kernel_size", "set")},
    "group": {"conv": ("convolution_param", "group", "set")},
    "stride": {"conv": ("convolution_param", "stride", "add"),
               "pool": ("pooling_param", "stride", "set")},
    "pool": {"pool": ("pooling_param", "pool", "set")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio", "set")},
    "local_size": {"lrn": ("lrn_param", "local_size", "set")},
    "alpha": {"lrn": ("lrn_param", "alpha", "set")},
    "beta": {"lrn": ("lrn_param", "beta", "set")},
    "k": {"lrn": ("lrn_param", "k", "set")},
    "source": {"data": ("data_param", "source", "set"),
               "hdf5_data": ("hdf5_data_param", "source", "set"),
               "images": ("image_data_param", "source", "set"),
               "window_data": ("window_data_param", "source", "set"),
               "infogain_loss": ("infogain_loss_param", "source", "set")},
    "batchsize": {"data": ("data_param", "batch_size", "set"),
                  "hdf5_data": ("hdf5_data_param", "batch_size", "set"),
                  "images": ("image_data_param", "batch_size", "set"),
                  "window_data": ("window_data_param", "batch_size", "set")},
    "rand_skip": {"data": ("data_param", "rand_skip", "set"),
                  "images": ("image_data_param", "rand_skip", "set")},
    "shuffle_images": {"images": ("image_data_param", "shuffle", "set")},
    "new_height": {"images": ("image_data_param", "new_height", "set")},
    "new_width": {"images": ("image_data_param", "new_width", "set")},
    "concat_dim": {"concat": ("concat_param", "concat_dim", "set")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold", "set")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold", "set")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction", "set")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad", "set")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode", "set")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", "", "copy")},
}

# Fields every V0 type moves into transform_param, whatever the layer type.
_V0_TRANSFORM = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size", "mirror": "mirror"}


def _fold_padding_layers(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """Drop V0 "padding" layers, giving their pad to the conv/pool layer that reads them."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    last_top: dict[str, int] = {name: -1 for name in net.input}
    for i, conn in enumerate(net.layers):
        kind = conn.layer.type
        if kind != "padding":
            out.layers.add().CopyFrom(conn)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_top:
                raise ReplicateError(f"V0 net: layer '{conn.layer.name}' reads unknown blob '{blob}'")
            source_index = last_top[blob]
            if source_index == -1:
                continue
            source = net.layers[source_index]
            if source.layer.type == "padding":
                if kind not in ("conv", "pool") or len(conn.bottom) != 1:
                    raise ReplicateError(
                        f"V0 net: padding layer '{source.layer.name}' feeds '{conn.layer.name}' "
                        f"({kind}); only a single-input conv or pool layer may follow padding"
                    )
                if len(source.bottom) != 1 or len(source.top) != 1:
                    raise ReplicateError(
                        f"V0 net: padding layer '{source.layer.name}' must have one bottom and one top"
                    )
                target = out.layers[len(out.layers) - 1]
                target.layer.pad = source.layer.pad
                target.bottom[j] = source.bottom[0]
        for blob in conn.top:
            last_top[blob] = i
    return out


def _upgrade_v0_layer(conn: caffe_pb2.V1LayerParameter) -> caffe_pb2.V1LayerParameter:
    out = caffe_pb2.V1LayerParameter()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    if not conn.HasField("layer"):
        return out
    v0 = conn.layer
    kind = v0.type
    if v0.HasField("name"):
        out.name = v0.name
    if v0.HasField("type"):
        if kind not in _V0_TYPES:
            raise ReplicateError(f"V0 layer '{v0.name}' has unknown type '{kind}'")
        out.type = _V0_TYPES[kind]
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)
    for field, targets in _V0_FIELDS.items():
        if not v0.HasField(field):
            continue
        if kind not in targets:
            raise ReplicateError(f"V0 layer '{v0.name}': parameter '{field}' does not apply to type '{kind}'")
        message_name, target, how = targets[kind]
        message = getattr(out, message_name)
        value = getattr(v0, field)
        if isinstance(value, int) and value < 0:  # V0's signed new_height/new_width, unsigned in V1
            raise ReplicateError(f"V0 layer '{v0.name}': {field} is {value}; Caffe would read it as {value % 2**32}")
        if how == "copy" and not target:
            message.CopyFrom(value)
        elif how == "copy":
            getattr(message, target).CopyFrom(value)
        elif how == "add":
            getattr(message, target).append(value)
        else:
            setattr(message, target, value)
    for field, target in _V0_TRANSFORM.items():
        if v0.HasField(field):
            setattr(out.transform_param, target, getattr(v0, field))
    return out


def _upgrade_v0_net(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    padded = _fold_padding_layers(net)
    out = caffe_pb2.NetParameter()
    if padded.HasField("name"):
        out.name = padded.name
    for conn in padded.layers:
        out.layers.add().CopyFrom(_upgrade_v0_layer(conn))
    out.input.extend(padded.input)
    out.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        out.force_backward = padded.force_backward
    return out


# ---------------------------------------------------------------- data transformation fields

_TRANSFORM_SOURCES = {V1.DATA: "data_param", V1.IMAGE_DATA: "image_data_param", V1.WINDOW_DATA: "window_data_param"}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def _needs_transform_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """Caffe's NetNeedsDataUpgrade: some V1 data layer sets a transform field in its own message."""
    return any(
        getattr(layer, _TRANSFORM_SOURCES[layer.type]).HasField(field)
        for layer in net.layers if layer.type in _TRANSFORM_SOURCES for field in _TRANSFORM_FIELDS
    )


def _move_transform_fields(net: caffe_pb2.NetParameter) -> None:
    """V1 data layers kept scale/mean_file/crop_size/mirror in their own parameter message.

    As Caffe's UpgradeNetDataTransformation, every V1 data layer of the net comes out with its
    own message and a transform_param present, empty where nothing moved, so that the upgraded
    text is the one upgrade_net_proto_text writes."""
    for layer in net.layers:
        source_name = _TRANSFORM_SOURCES.get(layer.type)
        if source_name is None:
            continue
        source = getattr(layer, source_name)
        source.SetInParent()
        layer.transform_param.SetInParent()
        for field in _TRANSFORM_FIELDS:
            if source.HasField(field):
                setattr(layer.transform_param, field, getattr(source, field))
                source.ClearField(field)


# ---------------------------------------------------------------- V1 -> V2

_V1_TYPE_NAMES: dict[int, str] = {
    V1.NONE: "", V1.ABSVAL: "AbsVal", V1.ACCURACY: "Accuracy", V1.ARGMAX: "ArgMax", V1.BNLL: "BNLL",
    V1.CONCAT: "Concat", V1.CONTRASTIVE_LOSS: "ContrastiveLoss", V1.CONVOLUTION: "Convolution",
    V1.DECONVOLUTION: "Deconvolution", V1.DATA: "Data", V1.DROPOUT: "Dropout",
    V1.DUMMY_DATA: "DummyData", V1.EUCLIDEAN_LOSS: "EuclideanLoss", V1.ELTWISE: "Eltwise",
    V1.EXP: "Exp", V1.FLATTEN: "Flatten", V1.HDF5_DATA: "HDF5Data", V1.HDF5_OUTPUT: "HDF5Output",
    V1.HINGE_LOSS: "HingeLoss", V1.IM2COL: "Im2col", V1.IMAGE_DATA: "ImageData",
    V1.INFOGAIN_LOSS: "InfogainLoss", V1.INNER_PRODUCT: "InnerProduct", V1.LRN: "LRN",
    V1.MEMORY_DATA: "MemoryData", V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    V1.MVN: "MVN", V1.POOLING: "Pooling", V1.POWER: "Power", V1.RELU: "ReLU", V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax", V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.SPLIT: "Split", V1.SLICE: "Slice",
    V1.TANH: "TanH", V1.WINDOW_DATA: "WindowData", V1.THRESHOLD: "Threshold",
}

# Parameter messages a V1 layer carries over unchanged, in Caffe's order.
_V1_PARAM_MESSAGES = (
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param", "convolution_param",
    "data_param", "dropout_param", "dummy_data_param", "eltwise_param", "exp_param",
    "hdf5_data_param", "hdf5_output_param", "hinge_loss_param", "image_data_param",
    "infogain_loss_param", "inner_product_param", "lrn_param", "memory_data_param", "mvn_param",
    "pooling_param", "power_param", "relu_param", "sigmoid_param", "softmax_param", "slice_param",
    "tanh_param", "threshold_param", "window_data_param", "transform_param", "loss_param",
)


def _param_spec(layer: caffe_pb2.LayerParameter, i: int) -> caffe_pb2.ParamSpec:
    while len(layer.param) <= i:
        layer.param.add()
    return layer.param[i]


def _upgrade_v1_layer(v1: caffe_pb2.V1LayerParameter) -> caffe_pb2.LayerParameter:
    if v1.HasField("layer"):
        raise ReplicateError(f"layer '{v1.name}' mixes the V0 'layer' field into a V1 layer")
    out = caffe_pb2.LayerParameter()
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        out.type = _V1_TYPE_NAMES[v1.type]
    out.blobs.extend(v1.blobs)
    for i, name in enumerate(v1.param):
        _param_spec(out, i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        _param_spec(out, i).share_mode = mode  # STRICT/PERMISSIVE have the same numbers in both enums
    for i, lr in enumerate(v1.blobs_lr):
        _param_spec(out, i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        _param_spec(out, i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for name in _V1_PARAM_MESSAGES:
        if v1.HasField(name):
            getattr(out, name).CopyFrom(getattr(v1, name))
    return out


def _upgrade_v1_net(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    if len(net.layer):
        raise ReplicateError(
            "net mixes current 'layer' and deprecated 'layers' fields; rewrite it in one format"
        )
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    for v1 in net.layers:
        out.layer.add().CopyFrom(_upgrade_v1_layer(v1))
    return out


# ---------------------------------------------------------------- inputs and BatchNorm

def _inputs_to_layer(net: caffe_pb2.NetParameter) -> None:
    """`input:` + `input_shape`/`input_dim` become an Input layer placed first (UpgradeNetInput)."""
    if net.input_shape or net.input_dim:
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, blob in enumerate(net.input):
            layer.top.append(blob)
            shape = layer.input_param.shape.add()
            if net.input_shape:
                if i >= len(net.input_shape):
                    raise ReplicateError(f"input '{blob}' has no input_shape ({len(net.input)} inputs, "
                                         f"{len(net.input_shape)} input_shape)")
                shape.CopyFrom(net.input_shape[i])
            else:
                dims = net.input_dim[4 * i: 4 * i + 4]
                if len(dims) != 4:
                    raise ReplicateError(f"input '{blob}' needs 4 input_dim values, found {len(dims)}")
                shape.dim.extend(dims)
        layers = [layer, *net.layer]
        del net.layer[:]
        net.layer.extend(layers)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def _freeze_legacy_batch_norm(net: caffe_pb2.NetParameter) -> None:
    """BatchNorm layers that declare three ParamSpecs (the old definition) get lr/decay 0."""
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


# ---------------------------------------------------------------- entry points

def net_needs_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """True for V0/V1 layers, deprecated input fields, or old-style BatchNorm params."""
    return bool(net.layers or net.input or any(
        layer.type == "BatchNorm" and len(layer.param) == 3 for layer in net.layer
    ))


def upgrade_net(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A current-format (V2) copy of `net`, upgraded the way Caffe's UpgradeNetAsNeeded does."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    if any(conn.HasField("layer") for conn in out.layers):
        out = _upgrade_v0_net(out)
    if _needs_transform_upgrade(out):
        _move_transform_fields(out)
    if out.layers:
        out = _upgrade_v1_net(out)
    if out.input:
        _inputs_to_layer(out)
    _freeze_legacy_batch_norm(out)
    return out


_SOLVER_TYPES = {
    caffe_pb2.SolverParameter.SGD: "SGD", caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad", caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta", caffe_pb2.SolverParameter.ADAM: "Adam",
}


def upgrade_solver(solver: caffe_pb2.SolverParameter) -> caffe_pb2.SolverParameter:
    """`solver_type: NESTEROV` (enum) becomes `type: "Nesterov"`, as UpgradeSolverAsNeeded does."""
    out = caffe_pb2.SolverParameter()
    out.CopyFrom(solver)
    if out.HasField("solver_type"):
        if out.HasField("type"):
            raise ReplicateError("solver sets both the deprecated 'solver_type' and 'type'; keep 'type'")
        out.type = _SOLVER_TYPES[out.solver_type]
        out.ClearField("solver_type")
    return out
