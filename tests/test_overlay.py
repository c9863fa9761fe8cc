"""Drawing over output frames: panels side by side at one height, burned-in labels."""
import numpy as np

from mcnet_rt.io.overlay import compose


def frames(n, size=128, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_compose_panels_and_label():
    source, driving, results = frames(1)[0], frames(2, seed=1), frames(2, seed=2)
    assert compose(source, driving, results) is results
    panels = np.stack(compose(source, driving, results, panels=True, label="X"))
    assert panels.shape == (2, 128, 384, 3)
    np.testing.assert_array_equal(panels[1, 20:, 128:256], driving[1, 20:])
    np.testing.assert_array_equal(panels[0, 20:, :128], source[20:])
    unlabelled = np.stack(compose(source, driving, results, panels=True))
    np.testing.assert_array_equal(panels[:, 20:], unlabelled[:, 20:])
    assert (panels[:, :8] != unlabelled[:, :8]).any()  # the label's band
