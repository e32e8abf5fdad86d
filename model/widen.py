"""Widen a trained RoadNet into a wider variant of the same layout, keeping its function.

Net2Net-style widening (Chen et al., 2016): each new channel of a convolution is a copy of
an old channel (new channel ``j`` copies old channel ``j mod n``), its batch normalization
copied with it, and every consumer of the widened layer (the next convolution, the stage's
side output) splits the weight of an old input channel among its copies. The split is drawn
at random, each part in ``[0.5, 1.5]`` before normalizing to the old weight, so the wider
model computes exactly the narrow one's logits (up to float rounding) while the copies get
different gradients and can drift apart in training.

Only the convolutions of :class:`~roadnet.model.layers.ConvBNAct` and the scores of
:class:`~roadnet.model.layers.SideOutput` change shape; every other weight (normalization,
the fusing ``1×1`` convolutions) is copied as it is.
"""

from __future__ import annotations

import re

import keras
import numpy as np

from roadnet.model.layers import ConvBNAct, SideOutput

__all__ = ["widen_into"]

_CONV = re.compile(r"^(?P<net>[a-z]+)_conv(?P<stage>\d+)_(?P<index>\d+)$")
_SIDE = re.compile(r"^(?P<net>[a-z]+)_side(?P<stage>\d+)$")


def _mapping(old: int, new: int) -> np.ndarray:
    """``(new,)`` int: the old channel each new channel copies (``j mod old``)."""
    if new < old:
        raise ValueError(f"cannot widen {old} channels into {new}")
    return np.arange(new) % old


def _split(mapping: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(new,)`` float: each copy's share of its old channel; shares of a channel sum to 1."""
    parts = rng.uniform(0.5, 1.5, mapping.size)
    totals: np.ndarray = np.bincount(mapping, weights=parts)
    shares: np.ndarray = parts / totals[mapping]
    return shares


def _chains(model: keras.Model) -> dict[str, list[str]]:
    """Per net (``surface``, ``edge``, ``centerline``), its ConvBNAct names in data order."""
    chains: dict[str, list[tuple[int, int, str]]] = {}
    for layer in model.layers:
        match = _CONV.match(layer.name)
        if isinstance(layer, ConvBNAct) and match:
            key = (int(match["stage"]), int(match["index"]), layer.name)
            chains.setdefault(match["net"], []).append(key)
    return {net: [name for *_, name in sorted(keys)] for net, keys in chains.items()}


def widen_into(source: keras.Model, target: keras.Model, *, seed: int = 0) -> None:
    """Set ``target``'s weights to a widened copy of ``source`` (same layer names, wider convs).

    Args:
        source: a built RoadNet (any width).
        target: a built RoadNet of the same layout, every convolution at least as wide.
        seed: the draw of the weight splits.

    Raises:
        ValueError: the two models differ in layout, or ``target`` is narrower somewhere.
    """
    rng = np.random.default_rng(seed)
    src = {layer.name: layer for layer in source.layers}
    names = sorted(layer.name for layer in target.layers)
    if names != sorted(src):
        raise ValueError(f"{source.name} and {target.name} have different layers")
    out_maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # conv name -> (mapping, split)
    done: set[str] = set()
    for net, chain in _chains(target).items():
        previous: str | None = None
        for name in chain:
            old, new = src[name], target.get_layer(name)
            kernel = np.asarray(old.conv.kernel)  # (k, k, cin, cout)
            if previous is not None:  # the first conv of a net reads the image: unchanged
                in_map, in_split = out_maps[previous]
                kernel = kernel[:, :, in_map, :] * in_split[None, None, :, None]
            out_map = _mapping(kernel.shape[3], new.filters)
            new.conv.kernel.assign(kernel[..., out_map])
            bn_old, bn_new = old.bn, new.bn
            for attr in ("gamma", "beta", "moving_mean", "moving_variance"):
                getattr(bn_new, attr).assign(np.asarray(getattr(bn_old, attr))[out_map])
            out_maps[name] = (out_map, _split(out_map, rng))
            done.add(name)
            previous = name
        for layer in target.layers:
            match = _SIDE.match(layer.name)
            if not (isinstance(layer, SideOutput) and match and match["net"] == net):
                continue
            last = [n for n in chain if n.startswith(f"{net}_conv{match['stage']}_")][-1]
            in_map, in_split = out_maps[last]
            kernel = np.asarray(src[layer.name].score.kernel)[:, :, in_map, :]
            layer.score.kernel.assign(kernel * in_split[None, None, :, None])
            layer.score.bias.assign(np.asarray(src[layer.name].score.bias))
            done.add(layer.name)
    for layer in target.layers:
        if layer.name in done:
            continue
        weights = src[layer.name].get_weights()
        if [w.shape for w in weights] != [w.shape for w in layer.get_weights()]:
            raise ValueError(f"layer {layer.name} differs in shape and is not a widened conv")
        layer.set_weights(weights)
