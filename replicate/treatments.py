"""The treatment catalogue: which net a (treatment, split, n, target) names, and what it changes.

Every network of Yosinski et al. 2014 is CaffeNet with three knobs: the dataset it trains on,
which of its 8 weight layers are frozen (lr_mult 0, decay_mult 0), and which are renamed with a
`-new` suffix so that Caffe's copy of trained weights (by layer name) leaves them random.  This
module maps the paper's treatments onto those knobs and onto the authors' directory names, so
the templates never need to know what a "selffer" is.

Dataset letters follow the authors' files, not the paper's prose: in the natman split A is the
natural half (449 classes) and B the man-made half (551); the paper swaps them when it writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from replicate.errors import ReplicateError

#: The 8 weight layers, "layers 1..8" of the paper, in order.
WEIGHT_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
SPLITS = ("0", "1", "2", "3", "natman")
#: Images per class of the authors' reduced-data nets (1300 = every image of whole_train).
REDUCED_SIZES = (1, 2, 5, 10, 25, 50, 100, 250, 500, 750, 1000, 1300)
#: Families of the nets trained from scratch that the others copy (base) or are measured against
#: (whole = netbase, the random-frozen nets' reference): a solver config's "base" fields are theirs.
BASE_FAMILIES = ("base", "whole")
MAX_PER_CLASS = 1300


@dataclass(frozen=True)
class Treatment:
    """One row of the catalogue.

    copies: starts from a base net's weights (layers 1..n copied, layers above renamed `-new`).
    frozen: layers 1..n have lr_mult 0 / decay_mult 0.  same: the base net is trained on the
    target dataset itself (selffer) rather than on the other half (transfer).
    """

    name: str
    family: str
    summary: str
    has_split: bool
    has_n: bool
    copies: bool = False
    frozen: bool = False
    same: bool = False


TREATMENTS: dict[str, Treatment] = {
    t.name: t
    for t in (
        Treatment("base", "base", "base net trained on one half: half{s}{T}", True, False),
        Treatment("BnB", "selffer", "selffer: layers 1..n copied from base{T} and frozen, "
                  "trained on T: transfer{s}{T}{s}{T}_1_{n}", True, True, True, True, True),
        Treatment("BnB+", "selffer_ft", "fine-tuned selffer: as BnB but every layer learns: "
                  "transfer-ft{s}{T}{s}{T}_1_{n}", True, True, True, False, True),
        Treatment("AnB", "transfer", "transfer: layers 1..n copied from the other half's base "
                  "net and frozen, trained on T: transfer{s}{S}{s}{T}_1_{n}",
                  True, True, True, True, False),
        Treatment("AnB+", "transfer_ft", "fine-tuned transfer: as AnB but every layer learns: "
                  "transfer-ft{s}{S}{s}{T}_1_{n}", True, True, True, False, False),
        Treatment("random", "random_frozen", "layers 1..n random and frozen, no weights, plain "
                  "names, trained on all 1000 classes: nolearn_1_{n}", False, True, False, True),
        Treatment("whole", "whole", "base net on all 1000 classes: netbase", False, False),
        Treatment("reduced", "reduced", "1000 classes, first K images per class, reduced "
                  "solver: reduced-{K:04d}", False, False),
    )
}


@dataclass(frozen=True)
class NetSpec:
    """Everything the templates and the plan need about one net, nothing about how to draw it.

    Datasets are named like the data store's sets without the `_train`/`_valid` suffix
    (`half0A`, `halfnatmanB`, `whole`, `reduced0050`).  `mean_set` is the training set whose
    mean file the net subtracts: the authors copied the *base* net's mean into every transfer
    and selffer directory (transfernatmanAB uses halfnatmanA's mean while training on
    halfnatmanB), so copied layers see inputs centred as in training.
    """

    name: str
    treatment: str
    family: str
    split: str | None
    n: int
    target: str
    source: str | None
    train_set: str
    val_set: str
    mean_set: str
    weights_from: str | None
    frozen: tuple[str, ...]
    renamed: tuple[str, ...]
    per_class: int | None = None

    @property
    def reduced(self) -> bool:
        return self.treatment == "reduced"

    @property
    def copied(self) -> tuple[str, ...]:
        """The weight layers it copies from its base by name (those not renamed `-new`)."""
        return tuple(k for k in WEIGHT_LAYERS if k not in self.renamed) if self.weights_from else ()


def _other(letter: str) -> str:
    return "B" if letter == "A" else "A"


def _half(split: str, letter: str) -> str:
    return f"half{split}{letter}"


def _transfer_name(ft: bool, split: str, src: str, dst: str, n: int) -> str:
    # natman names do not repeat the split: transfernatmanAB_1_3, not transfernatmanAnatmanB.
    pair = f"natman{src}{dst}" if split == "natman" else f"{split}{src}{split}{dst}"
    return f"transfer{'-ft' if ft else ''}{pair}_1_{n}"


def _check(treatment: str, split: str | None, n: int | None, target: str | None,
           per_class: int | None) -> Treatment:
    if treatment not in TREATMENTS:
        raise ReplicateError(f"unknown treatment {treatment!r} (known: {', '.join(TREATMENTS)})")
    t = TREATMENTS[treatment]
    if t.has_split:
        if split not in SPLITS:
            raise ReplicateError(f"split {split!r} does not exist (known: {', '.join(SPLITS)})")
        if target not in ("A", "B"):
            raise ReplicateError(f"target {target!r} is not A or B")
    elif split is not None or target is not None:
        raise ReplicateError(f"treatment {treatment} takes no split or target")
    if t.has_n:
        if n is None:
            raise ReplicateError(f"treatment {treatment} needs --n, the layers it copies or freezes (1..7), "
                                 f"e.g. --n 3")
        if not 1 <= n <= 7:
            raise ReplicateError(f"treatment {treatment} needs n in 1..7, got {n}")
    elif n is not None:
        raise ReplicateError(f"treatment {treatment} takes no n")
    if t.name == "reduced":
        if per_class is None:
            raise ReplicateError(f"treatment reduced needs --per-class K, the images per class "
                                 f"(1..{MAX_PER_CLASS}), e.g. --per-class 100")
        if not 1 <= per_class <= MAX_PER_CLASS:
            raise ReplicateError(
                f"treatment reduced needs images per class in 1..{MAX_PER_CLASS}, got {per_class}")
    elif per_class is not None:
        raise ReplicateError(f"treatment {treatment} takes no images-per-class count")
    return t


def net_spec(treatment: str, split: str | None = None, n: int | None = None,
             target: str | None = None, per_class: int | None = None) -> NetSpec:
    """The net one treatment names; bad combinations raise ReplicateError with the reason."""
    t = _check(treatment, split, n, target, per_class)
    if t.name == "whole":
        return NetSpec("netbase", t.name, t.family, None, 0, "whole", None, "whole_train",
                       "whole_valid", "whole_train", None, (), ())
    if t.name == "reduced":
        assert per_class is not None
        # 1300 images per class is every image: the authors pointed reduced-1300 at whole_train.
        data = "whole" if per_class >= MAX_PER_CLASS else f"reduced{per_class:04d}"
        return NetSpec(f"reduced-{per_class:04d}", t.name, t.family, None, 0, data, None,
                       f"{data}_train", "whole_valid", f"{data}_train", None, (), (),
                       per_class=per_class)
    if t.name == "random":
        assert n is not None
        return NetSpec(f"nolearn_1_{n}", t.name, t.family, None, n, "whole", None,
                       "whole_train", "whole_valid", "whole_train", None,
                       WEIGHT_LAYERS[:n], ())
    assert split is not None and target is not None
    dst = _half(split, target)
    if t.name == "base":
        return NetSpec(dst, t.name, t.family, split, 0, dst, None, f"{dst}_train",
                       f"{dst}_valid", f"{dst}_train", None, (), ())
    assert n is not None
    src_letter = target if t.same else _other(target)
    src = _half(split, src_letter)
    family = f"natman_{t.family}" if split == "natman" else t.family
    return NetSpec(
        name=_transfer_name(not t.frozen, split, src_letter, target, n),
        treatment=t.name,
        family=family,
        split=split,
        n=n,
        target=dst,
        source=src,
        train_set=f"{dst}_train",
        val_set=f"{dst}_valid",
        mean_set=f"{src}_train",
        weights_from=src,
        frozen=WEIGHT_LAYERS[:n] if t.frozen else (),
        renamed=WEIGHT_LAYERS[n:],
    )


def paper_grid() -> list[NetSpec]:
    """Every net the authors trained and logged (the 148 names of results/paper_reference.csv).

    Selffers were run on the A halves (the paper's footnote 3 pools AnA with BnB), transfers in
    both directions on every split, fine-tuned nets only on part of splits 0 and 1.
    """
    ns = range(1, 8)
    grid = [net_spec("base", s, None, x) for s in SPLITS for x in "AB"]
    grid.append(net_spec("whole"))
    grid += [net_spec("random", n=n) for n in ns]
    grid += [net_spec("reduced", per_class=k) for k in REDUCED_SIZES]
    for s in SPLITS:
        if s != "natman":
            grid += [net_spec("BnB", s, n, "A") for n in ns]
        grid += [net_spec("AnB", s, n, x) for x in "BA" for n in ns]
    grid += [net_spec("BnB+", "0", n, "A") for n in ns]
    grid += [net_spec("AnB+", "0", n, "B") for n in ns]
    grid += [net_spec("BnB+", "1", n, "A") for n in (3, 5, 6)]
    grid += [net_spec("AnB+", "1", n, "B") for n in (2, 3, 4)]
    return grid


#: The n of the demo grid's fine-tuned nets (BnB+, AnB+): both ends and every other layer.
DEMO_FINE_TUNED_NS = (1, 3, 5, 7)


def demo_grid() -> list[NetSpec]:
    """The nets of `python -m replicate demo`: the paper's grid on split 0 and natman, thinned
    to what the report's six claims and two figures need (41 of the 61 nets those splits have).

    Every frozen treatment keeps n = 1..7, for the curves of Figures 2 and 3 and for the BnB dip
    rule (n = 3..6 against 1, 2 and against 7), but in one direction only: selffers on A, as the authors
    ran them; on split 0 transfers from A to B, the direction of the fine-tuned transfers, so
    that AnB, AnB+ and Table 1 share baseB; on natman from man-made to natural (B to A), the
    direction whose drop from its base is the larger with the demo's data (docs/demo.md).  The
    claims that use transfers compare n = 6, 7 with n = 1, 2 (AnB falls) or natman with split 0
    at n = 6, 7 (dissimilar tasks), which one direction shows.  The fine-tuned nets train every
    layer, and so cost about 1.5 times a frozen net with n >= 3: they keep `DEMO_FINE_TUNED_NS`,
    as the authors ran theirs on split 1 at three n each.  The bases of both halves stay: each
    is the source of one treatment and the reference of another.
    """
    ns = range(1, 8)
    grid = [net_spec("base", s, None, x) for s in ("0", "natman") for x in "AB"]
    grid.append(net_spec("whole"))
    grid += [net_spec("random", n=n) for n in ns]
    grid += [net_spec("BnB", "0", n, "A") for n in ns]
    grid += [net_spec("AnB", "0", n, "B") for n in ns]
    grid += [net_spec("AnB", "natman", n, "A") for n in ns]
    grid += [net_spec("BnB+", "0", n, "A") for n in DEMO_FINE_TUNED_NS]
    grid += [net_spec("AnB+", "0", n, "B") for n in DEMO_FINE_TUNED_NS]
    return grid


#: The grids `generate --all --grid NAME` draws from.
GRIDS = {"paper": paper_grid, "demo": demo_grid}
