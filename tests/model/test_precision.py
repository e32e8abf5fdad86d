from __future__ import annotations

import numpy as np
import pytest

from roadnet.model.precision import policy_scope, with_policy


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_copy_computes_in_the_policy_with_the_same_float32_weights(policy: str) -> None:
    import keras

    from roadnet.model.io import default_model_path, load_model

    model = load_model(default_model_path())
    copy = with_policy(model, policy)  # type: ignore[arg-type]
    convs = [layer for layer in copy._flatten_layers() if isinstance(layer, keras.layers.Conv2D)]
    compute = policy.removeprefix("mixed_")
    assert convs and {layer.compute_dtype for layer in convs} == {compute}
    assert {w.dtype for w in copy.weights} == {"float32"}
    assert keras.mixed_precision.global_policy().name == "float32"  # left as it was
    x = np.random.default_rng(0).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    full, low = model(x, training=False), copy(x, training=False)
    for task in ("surface", "edge", "centerline"):
        assert low[task].dtype == compute
        p32 = 1 / (1 + np.exp(-np.asarray(full[task], np.float64)))
        plow = 1 / (1 + np.exp(-np.asarray(low[task], np.float64)))
        # bfloat16 keeps 8 bits of mantissa, float16 11: see BENCHMARKS.md for whole scenes
        assert np.abs(p32 - plow).max() < (0.1 if compute == "bfloat16" else 0.02)
    back = with_policy(copy, "float32")
    np.testing.assert_allclose(
        np.asarray(back(x, training=False)["surface"]), np.asarray(full["surface"]), atol=1e-4
    )


def test_policy_scope_restores_the_global_policy_after_an_error() -> None:
    import keras

    with pytest.raises(RuntimeError), policy_scope("mixed_bfloat16"):
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        raise RuntimeError
    assert keras.mixed_precision.global_policy().name == "float32"
