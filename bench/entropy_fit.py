"""Entropy minimization after `roadnet adapt`: an experiment, not a shipped step.

    python bench/entropy_fit.py ADAPTED.keras SCENE --out FIT.keras \
        [--steps 30] [--lr 1e-3] [--fraction tile|mean] [--weight 100]
    roadnet evaluate-model SCENE LABELS --model FIT.keras --no-adapt --threshold card

Starts from a model already adapted to the scene (``roadnet adapt``: colours matched and
batch-normalization statistics refitted) and trains only the batch-normalization scales and
offsets, with the statistics frozen, to make the three fused outputs confident on tiles of
the scene: the mean binary entropy of their probabilities (test-time entropy minimization,
Wang et al., 2021, "Tent"). No label is read. Alone, this drives a segmentation net towards
"no road" (most pixels are background), so a term holds the predicted road fraction where
the adapted model put it, ``weight * (fraction - reference) ** 2`` per task:

- ``--fraction tile``: each tile's own fraction, as the adapted model predicted it;
- ``--fraction mean``: the mean fraction over all the scene's tiles, against each batch of
  two tiles (a looser hold: a batch's fraction differs from the mean).

The tiles are those ``roadnet adapt`` draws (64 of 512 px at the card's ``predict_gsd``,
seed 1), in batches of two. The output gets the adapted model's card, so ``--threshold
card`` and ``predict_gsd`` mean the same for both.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model adapted to SCENE (roadnet adapt)")
    parser.add_argument("scene")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--fraction", choices=["tile", "mean"], default="tile")
    parser.add_argument("--weight", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from roadnet.model.adapt import batchnorm_layers
    from roadnet.model.gsd import card_pixel_sizes, predict_grid
    from roadnet.model.io import load_model
    from roadnet.pipeline.inference.adapt import sample_tiles
    from roadnet.pipeline.inference.open import open_scene
    from roadnet.tasks import TASKS

    net = load_model(args.model)
    scene = open_scene(args.scene, chunk=512)
    card_gsd, finest = card_pixel_sizes(args.model)
    _, factor = predict_grid("auto", scene_gsd=scene.gsd, card_gsd=card_gsd, card_finest=finest)
    tiles = sample_tiles(scene, tiles=64, tile_px=512, seed=1, resample=factor, coverage=2.0)

    reference = np.zeros((len(tiles), len(TASKS)), np.float32)
    for i in range(0, len(tiles), 4):
        out = net(tf.constant(tiles[i : i + 4]), training=False)
        for j, task in enumerate(TASKS):
            reference[i : i + 4, j] = tf.reduce_mean(tf.sigmoid(out[task]), axis=[1, 2, 3])
    if args.fraction == "mean":
        reference[:] = reference.mean(axis=0)

    for layer in net._flatten_layers(include_self=False):
        layer.trainable = False
    params: list[Any] = []
    for bn in batchnorm_layers(net):
        bn.trainable = True
        params += [bn.gamma, bn.beta]
    optimizer = keras.optimizers.Adam(args.lr)

    @tf.function  # type: ignore[misc]
    def step(x: Any, ref: Any) -> Any:
        with tf.GradientTape() as tape:
            out = net(x, training=False)  # frozen (adapted) statistics
            loss = 0.0
            for j, task in enumerate(TASKS):
                p = tf.sigmoid(out[task])
                entropy = -(p * tf.math.log(p + 1e-6) + (1 - p) * tf.math.log(1 - p + 1e-6))
                fraction = tf.reduce_mean(p, axis=[1, 2, 3])
                if args.fraction == "tile":
                    hold = tf.reduce_mean((fraction - ref[:, j]) ** 2)
                else:  # every row of the reference is the scene's mean
                    hold = (tf.reduce_mean(fraction) - ref[0, j]) ** 2
                loss += tf.reduce_mean(entropy) + args.weight * hold
        grads = tape.gradient(loss, [v.value for v in params])
        optimizer.apply_gradients(zip(grads, params, strict=True))
        return loss

    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    for i in range(args.steps):
        pick = rng.choice(len(tiles), 2, replace=False)
        loss = step(tf.constant(tiles[pick]), tf.constant(reference[pick]))
        if i % 10 == 0 or i == args.steps - 1:
            print(f"step {i}: loss {float(loss):.4f}, {time.perf_counter() - started:.0f} s")
    for layer in net._flatten_layers(include_self=False):
        layer.trainable = True
    net.save(args.out)
    card = json.loads(args.model.with_suffix(".json").read_text())
    card["model"] = args.out.name
    card["entropy_fit"] = {k: v for k, v in vars(args).items() if k not in ("model", "out")}
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    seconds = time.perf_counter() - started
    print(f"{args.out}: {args.steps} steps on {len(tiles)} tiles in {seconds:.0f} s")


if __name__ == "__main__":
    main()
