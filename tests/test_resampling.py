"""The numpy polyphase resampler equals scipy.signal.resample_poly (the reference)."""
import numpy as np
import pytest
import scipy.signal

from lrp_onnx.audio.resampling import resample_poly


@pytest.mark.parametrize("sr_from,sr_to", [(16000, 8000), (48000, 8000), (44100, 8000), (8000, 16000),
                                           (22050, 16000), (11025, 8000), (8000, 44100), (16000, 16001)])
@pytest.mark.parametrize("n", [1, 7, 1000, 16001])
def test_equals_scipy(sr_from, sr_to, n):
    x = np.random.default_rng(n).standard_normal(n)
    from math import gcd

    g = gcd(sr_from, sr_to)
    expected = scipy.signal.resample_poly(x, sr_to // g, sr_from // g)
    got = resample_poly(x, sr_to, sr_from)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * max(1.0, np.abs(expected).max()))
