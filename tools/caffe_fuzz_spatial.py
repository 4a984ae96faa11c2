"""The spatial grammars of tools/caffe_fuzz.py: random nets over an image-shaped input, for the
layer settings the 2-D grammar cannot reach (seeds 2000-2999 of docs/fidelity.md; the extended
one, `--grammar spatial+`, adds 1-D and 3-D convolutions, Concat and Softmax over axis 2 and
InnerProduct without bias: seeds 3000 on).

A net (TRAIN, or TEST for a fifth of them) has 5-12 random layers over an input of 2-3 images of
2-6 channels and 4-9 x 4-9 pixels: Convolution (groups, rectangular kernels, strides, pads,
dilation, no bias, frozen, propagate_down: false), Pooling (MAX or AVE, pads, strides, global),
LRN (both regions; WITHIN_CHANNEL ignores k), ReLU (leaky), Sigmoid, TanH, Dropout (TEST only:
TRAIN draws its mask from Caffe's RNG), BatchNorm (batch or stored statistics), Scale (learned over
several axes, or by a second bottom, with a bias), Eltwise (SUM with coefficients, PROD, MAX),
Concat, Softmax (any axis), Flatten (to 2 or 3 axes), InnerProduct (axis 1 or 2, transposed),
Split, Silence, and over 5-wide scores SoftmaxWithLoss (ignore_label, each normalization, a
weight), a per-pixel SoftmaxWithLoss on a 1x1 convolution against a label map, Accuracy (top_k,
ignore_label) and a Softmax read by MultinomialLogisticLoss. A third of the layers that may are
computed in place; a tenth of the others have a propagate_down flag per bottom. Shapes follow
Caffe's rules (pooling's ceil and last-window clip), so that Caffe refuses only what its checks
refuse; no pooling has a window without pixels (its -FLT_MAX and NaN overflow what reads them;
golden case pool_empty_window covers it).
"""

from __future__ import annotations

import random

KINDS = ["conv", "conv", "conv", "pool", "pool", "lrn", "act", "act", "act", "bn", "scale", "scale2",
         "eltwise", "concat", "softmax", "flatten", "ip", "ip", "dropout", "split", "silence",
         "loss", "loss", "pixel_loss", "acc", "mlogistic"]
#: The extended grammar's further kinds: 1-D and 3-D convolutions over inputs of their own.
EXTENDED_KINDS = ["conv1d", "conv3d"]
GAUSS = 'type: "gaussian" std: 0.3'
#: Layers whose bottoms get no propagate_down flag: losses and Accuracy read labels.
NO_FLAGS = ('"SoftmaxWithLoss"', '"MultinomialLogisticLoss"', '"Accuracy"')
Shape = tuple[int, ...]


def _dims(rng: random.Random, what: str, low: int, high: int) -> tuple[str, tuple[int, int]]:
    """One value for both spatial axes (`what`, or `kernel_size`), or one each (`what_h`/`what_w`)."""
    if rng.random() < 0.3:
        h, w = rng.randint(low, high), rng.randint(low, high)
        return f"{what}_h: {h} {what}_w: {w} ", (h, w)
    v = rng.randint(low, high)
    key = "kernel_size" if what == "kernel" else what
    return (f"{key}: {v} " if v or rng.random() < 0.5 else ""), (v, v)


def _pooled(size: int, kernel: int, stride: int, pad: int) -> int:
    """Caffe's pooled size: ceil, then the last window must start inside the image or its first
    pad.  (The pycaffe build has no `round_mode`; golden cases pool_*_floor cover FLOOR.)"""
    out = -(-(size + 2 * pad - kernel) // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def net_text(rng: random.Random, extended: bool = False) -> tuple[str, str]:
    """A net's text and its phase; `extended` adds the later settings (EXTENDED_KINDS, Concat and
    Softmax over axis 2, InnerProduct without bias), seeds 3000 on, and leaves the draws of the
    first grammar's seeds as they were."""
    phase = "TEST" if rng.random() < 0.2 else "TRAIN"
    n, c, h, w = rng.choice([2, 3]), rng.choice([2, 3, 4, 6]), rng.randint(4, 9), rng.randint(4, 9)
    layers = [f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {n} dim: {c} '
              f'dim: {h} dim: {w} }} }} }}',
              f'layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ dim: {n} }} }} }}']
    shapes: dict[str, Shape] = {"data": (n, c, h, w)}
    losses = 0

    def add(text: str) -> None:
        """One layer; a tenth of those that send gradients get a propagate_down flag per bottom."""
        bottoms = text.count('bottom: "')
        if (bottoms and "propagate_down" not in text and not any(t in text for t in NO_FLAGS)
                and rng.random() < 0.1):
            text += "".join(f" propagate_down: {rng.choice(['true', 'false', 'false'])}" for _ in range(bottoms))
        layers.append("layer { " + text + " }")

    def top(name: str, src: str) -> str:
        """In place on src (never on an input) for a third of the layers that may be."""
        return src if src != "data" and not src.startswith("vol") and rng.random() < 0.3 else name

    for i in range(rng.randint(5, 12)):
        kind, name = rng.choice(KINDS + EXTENDED_KINDS if extended else KINDS), f"l{i}"
        src = rng.choice(sorted(shapes))
        four = sorted(b for b in shapes if len(shapes[b]) == 4)
        fives = sorted(b for b in shapes if len(shapes[b]) == 2 and shapes[b][1] == 5)
        if kind == "conv" and four:
            src = rng.choice(four)
            sn, sc, sh, sw = shapes[src]
            group = rng.choice([g for g in (1, 1, 2, 3) if sc % g == 0])
            k_text, (kh, kw) = _dims(rng, "kernel", 1, 3)
            s_text, (sth, stw) = _dims(rng, "stride", 1, 2)
            p_text, (ph, pw) = _dims(rng, "pad", 0, 2)
            dil = 2 if rng.random() < 0.2 else 1
            oh = (sh + 2 * ph - (dil * (kh - 1) + 1)) // sth + 1
            ow = (sw + 2 * pw - (dil * (kw - 1) + 1)) // stw + 1
            if oh < 1 or ow < 1:
                continue
            out = group * rng.choice([1, 2, 3])
            bias = rng.random() < 0.8
            extra = "param { lr_mult: 0 } " * (1 + bias) if rng.random() < 0.15 else ""
            extra += "propagate_down: false " if rng.random() < 0.1 else ""
            add(f'name: "{name}" type: "Convolution" bottom: "{src}" top: "{name}" {extra}convolution_param {{ '
                f'num_output: {out} group: {group} {k_text}{s_text}{p_text}' + (f"dilation: {dil} " if dil > 1 else "")
                + ("" if bias else "bias_term: false ") + f"weight_filler {{ {GAUSS} }} bias_filler {{ {GAUSS} }} }}")
            shapes[name] = (sn, out, oh, ow)
        elif kind == "pool" and four:
            src = rng.choice(four)
            sn, sc, sh, sw = shapes[src]
            method = rng.choice(["MAX", "AVE"])
            if rng.random() < 0.15:
                add(f'name: "{name}" type: "Pooling" bottom: "{src}" top: "{name}" '
                    f'pooling_param {{ pool: {method} global_pooling: true }}')
                shapes[name] = (sn, sc, 1, 1)
                continue
            k_text, (kh, kw) = _dims(rng, "kernel", 1, 3)
            s_text, (sth, stw) = _dims(rng, "stride", 1, 3)
            ph, pw = rng.randint(0, kh - 1), rng.randint(0, kw - 1)
            p_text = f"pad_h: {ph} pad_w: {pw} " if ph != pw else (f"pad: {ph} " if ph else "")
            oh, ow = _pooled(sh, kh, sth, ph), _pooled(sw, kw, stw, pw)
            if sh + 2 * ph < kh or sw + 2 * pw < kw or (oh - 1) * sth >= sh + ph or (ow - 1) * stw >= sw + pw:
                continue  # a window with no pixel: Caffe's -FLT_MAX or NaN (golden case pool_empty_window)
            add(f'name: "{name}" type: "Pooling" bottom: "{src}" top: "{name}" '
                f'pooling_param {{ pool: {method} {k_text}{s_text}{p_text}}}')
            shapes[name] = (sn, sc, oh, ow)
        elif kind == "lrn" and four:
            src = rng.choice(four)
            region = rng.choice(["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
            add(f'name: "{name}" type: "LRN" bottom: "{src}" top: "{name}" lrn_param {{ norm_region: {region} '
                f'local_size: {rng.choice([1, 3, 5])} alpha: {rng.choice([0.5, 1.7, 3.0])} '
                f'beta: {rng.choice([0.75, 0.5, 1.3])} k: {rng.choice([1, 2.5])} }}')
            shapes[name] = shapes[src]
        elif kind == "act":
            which = rng.choice(["ReLU", "leaky", "Sigmoid", "TanH"])
            t = top(name, src)
            if which == "leaky":
                add(f'name: "{name}" type: "ReLU" bottom: "{src}" top: "{t}" relu_param {{ negative_slope: 0.1 }}')
            else:
                add(f'name: "{name}" type: "{which}" bottom: "{src}" top: "{t}"')
            shapes[t] = shapes[src]
        elif kind == "dropout" and phase == "TEST":
            t = top(name, src)
            add(f'name: "{name}" type: "Dropout" bottom: "{src}" top: "{t}" dropout_param {{ dropout_ratio: 0.3 }}')
            shapes[t] = shapes[src]
        elif kind == "bn" and len(shapes[src]) >= 2:
            t = top(name, src)
            stats = rng.choice(["", "", "use_global_stats: true ", "use_global_stats: false "])
            add(f'name: "{name}" type: "BatchNorm" bottom: "{src}" top: "{t}" batch_norm_param {{ {stats}'
                f'eps: {rng.choice([1e-5, 0.001, 0.1])} moving_average_fraction: {rng.choice([0.999, 0.9])} }}')
            shapes[t] = shapes[src]
        elif kind == "scale" and len(shapes[src]) >= 2:
            dims = len(shapes[src])
            axes = rng.choice([a for a in ("", "num_axes: -1 ", "axis: 2 num_axes: 2 ", "axis: 0 num_axes: 2 ")
                               if not a.startswith("axis: 2") or dims == 4])
            bias = f"bias_term: true bias_filler {{ {GAUSS} }} " if rng.random() < 0.5 else ""
            t = top(name, src)
            add(f'name: "{name}" type: "Scale" bottom: "{src}" top: "{t}" scale_param {{ {axes}'
                f'filler {{ type: "gaussian" mean: 1 std: 0.3 }} {bias}}}')
            shapes[t] = shapes[src]
        elif kind == "scale2" and four:
            src = rng.choice(four)
            sn, sc = shapes[src][:2]
            by = rng.choice(sorted(shapes))
            add(f'name: "{name}f" type: "InnerProduct" bottom: "{by}" top: "{name}f" inner_product_param {{ '
                f'num_output: {sc} weight_filler {{ {GAUSS} }} bias_filler {{ type: "constant" value: 1 }} }}')
            shapes[name + "f"] = (sn, sc)
            add(f'name: "{name}" type: "Scale" bottom: "{src}" bottom: "{name}f" top: "{name}" scale_param {{ axis: 0'
                + (f" bias_term: true bias_filler {{ {GAUSS} }}" if rng.random() < 0.4 else "") + " }")
            shapes[name] = shapes[src]
        elif kind == "eltwise":
            same = [b for b in sorted(shapes) if shapes[b] == shapes[src]]
            bottoms = [src] + [rng.choice(same) for _ in range(rng.choice([1, 1, 2]))]
            op = rng.choice(["SUM", "SUM", "PROD", "MAX"])
            coeff = "".join(f"coeff: {rng.choice([0.5, -2, 1.5])} " for _ in bottoms) \
                if op == "SUM" and rng.random() < 0.4 else ""
            add(f'name: "{name}" type: "Eltwise" ' + "".join(f'bottom: "{b}" ' for b in bottoms)
                + f'top: "{name}" eltwise_param {{ operation: {op} {coeff}}}')
            shapes[name] = shapes[src]
        elif kind == "concat" and len(shapes[src]) >= 2:
            axis = 2 if extended and len(shapes[src]) >= 3 and rng.random() < 0.4 else 1
            fits = [b for b in sorted(shapes) if len(shapes[b]) == len(shapes[src])
                    and shapes[b][:axis] + shapes[b][axis + 1:] == shapes[src][:axis] + shapes[src][axis + 1:]]
            other = rng.choice(fits)
            add(f'name: "{name}" type: "Concat" bottom: "{src}" bottom: "{other}" top: "{name}"'
                + (f" concat_param {{ axis: {axis} }}" if axis != 1 else ""))
            shape = shapes[src]
            shapes[name] = shape[:axis] + (shape[axis] + shapes[other][axis],) + shape[axis + 1:]
        elif kind == "softmax" and len(shapes[src]) >= 2:
            axis = rng.choice([1, 1, -1] + ([2] if extended and len(shapes[src]) >= 3 else []))
            add(f'name: "{name}" type: "Softmax" bottom: "{src}" top: "{name}"'
                + (f" softmax_param {{ axis: {axis} }}" if axis != 1 else ""))
            shapes[name] = shapes[src]
        elif kind == "flatten" and four:
            src = rng.choice(four)
            sn, sc, sh, sw = shapes[src]
            if rng.random() < 0.7:
                add(f'name: "{name}" type: "Flatten" bottom: "{src}" top: "{name}"')
                shapes[name] = (sn, sc * sh * sw)
            else:
                add(f'name: "{name}" type: "Flatten" bottom: "{src}" top: "{name}" flatten_param {{ axis: 2 }}')
                shapes[name] = (sn, sc, sh * sw)
        elif kind == "ip":
            k = rng.choice([3, 4, 5, 5])
            axis = 2 if len(shapes[src]) >= 3 and rng.random() < 0.25 else 1
            extra = "param { lr_mult: 0 } param { lr_mult: 0 } " if rng.random() < 0.15 else ""
            extra += f"loss_weight: {rng.choice([0.5, 0.2])} " if rng.random() < 0.1 else ""
            transpose = "transpose: true " if rng.random() < 0.2 else ""
            if extended and rng.random() < 0.2:
                transpose += "bias_term: false "
                extra = extra.replace("param { lr_mult: 0 } param { lr_mult: 0 } ", "param { lr_mult: 0 } ")
            add(f'name: "{name}" type: "InnerProduct" bottom: "{src}" top: "{name}" {extra}inner_product_param {{ '
                f'num_output: {k} ' + (f"axis: {axis} " if axis != 1 else "") + transpose
                + f"weight_filler {{ {GAUSS} }} bias_filler {{ {GAUSS} }} }}")
            shapes[name] = shapes[src][:axis] + (k,)
        elif kind in ("conv1d", "conv3d"):  # over an input of its own, 1 or 3 spatial axes
            dims = [rng.randint(4, 7)] if kind == "conv1d" else [rng.randint(3, 5), rng.randint(4, 6), rng.randint(4, 6)]
            channels = rng.choice([2, 3])
            add(f'name: "vol{i}" type: "Input" top: "vol{i}" input_param {{ shape {{ dim: {n} dim: {channels} '
                + "".join(f"dim: {d} " for d in dims) + "} }")
            shapes[f"vol{i}"] = (n, channels, *dims)
            kernel = [rng.randint(1, 3) for _ in dims]
            stride = [rng.randint(1, 2) for _ in dims]
            pad = [rng.randint(0, 1) for _ in dims]
            out = rng.choice([2, 4])
            add(f'name: "{name}" type: "Convolution" bottom: "vol{i}" top: "{name}" convolution_param {{ num_output: {out} '
                + "".join(f"kernel_size: {k} " for k in kernel) + "".join(f"stride: {st} " for st in stride)
                + "".join(f"pad: {pd} " for pd in pad) + f"weight_filler {{ {GAUSS} }} bias_filler {{ {GAUSS} }} }}")
            shapes[name] = (n, out, *((d + 2 * pd - k) // st + 1 for d, k, st, pd in zip(dims, kernel, stride, pad)))
        elif kind == "split":
            add(f'name: "{name}" type: "Split" bottom: "{src}" top: "{name}a" top: "{name}b"')
            shapes[name + "a"] = shapes[name + "b"] = shapes[src]
        elif kind == "silence":
            add(f'name: "{name}" type: "Silence" bottom: "{src}"')
        elif kind == "loss" and fives:
            loss_param = ""
            if rng.random() < 0.3:
                loss_param += f"ignore_label: {rng.randint(0, 4)} "
            if rng.random() < 0.4:
                loss_param += f"normalization: {rng.choice(['VALID', 'BATCH_SIZE', 'FULL', 'NONE'])} "
            elif rng.random() < 0.15:
                loss_param += "normalize: false "
            weight = rng.choice(["", "", "loss_weight: 0.5 ", "loss_weight: 2 "])
            add(f'name: "{name}" type: "SoftmaxWithLoss" bottom: "{rng.choice(fives)}" bottom: "label" '
                f'top: "{name}" {weight}' + (f"loss_param {{ {loss_param}}}" if loss_param else ""))
            losses += 1
        elif kind == "pixel_loss" and four:
            src = rng.choice(four)
            sn, _, sh, sw = shapes[src]
            add(f'name: "{name}s" type: "Convolution" bottom: "{src}" top: "{name}s" convolution_param {{ '
                f'num_output: 5 kernel_size: 1 weight_filler {{ {GAUSS} }} }}')
            label_dims = f"dim: {sn} dim: 1 dim: {sh} dim: {sw}" if rng.random() < 0.5 else f"dim: {sn} dim: {sh} dim: {sw}"
            add(f'name: "label{i}" type: "Input" top: "label{i}" input_param {{ shape {{ {label_dims} }} }}')
            norm = rng.choice(["", "normalization: VALID ", "normalization: BATCH_SIZE ", "normalization: FULL "])
            ignore = f"ignore_label: {rng.randint(0, 4)} " if rng.random() < 0.4 else ""
            add(f'name: "{name}" type: "SoftmaxWithLoss" bottom: "{name}s" bottom: "label{i}" top: "{name}" '
                + (f"loss_param {{ {ignore}{norm}}}" if ignore or norm else ""))
            losses += 1
        elif kind == "acc" and fives:
            extra = f"top_k: {rng.choice([1, 2])} " + (f"ignore_label: {rng.randint(0, 4)} " if rng.random() < 0.2 else "")
            add(f'name: "{name}" type: "Accuracy" bottom: "{rng.choice(fives)}" bottom: "label" top: "{name}" '
                f"accuracy_param {{ {extra}}}")
        elif kind == "mlogistic" and fives:
            add(f'name: "{name}p" type: "Softmax" bottom: "{rng.choice(fives)}" top: "{name}p"')
            add(f'name: "{name}" type: "MultinomialLogisticLoss" bottom: "{name}p" bottom: "label" top: "{name}"')
            losses += 1
    if not losses:
        add(f'name: "fin" type: "InnerProduct" bottom: "{rng.choice(sorted(shapes))}" top: "fin" '
            f'inner_product_param {{ num_output: 5 weight_filler {{ {GAUSS} }} }}')
        add('name: "finloss" type: "SoftmaxWithLoss" bottom: "fin" bottom: "label" top: "finloss"')
    return "\n".join(layers) + "\n", phase
