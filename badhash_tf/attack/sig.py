"""SIG (Barni et al., ICIP 2019): a horizontal sinusoid added to every poisoned copy, scaled
so every 8-bit copy meets the cell's PSNR budget (25 dB, about the paper's own strength,
without one)."""

import numpy as np

from badhash_tf.attack import budgeted

SIG_FREQUENCY = 6  # periods over the image width (Barni et al.'s f)


def sig_pattern(shape, rmse, frequency=SIG_FREQUENCY):
    """SIG's signal [S, S, C]: a sinusoid sin(2 pi j f / S) along the columns j, the same in
    every row and channel, scaled to RMSE `rmse` exactly for any width (over whole periods
    its amplitude is sqrt(2) * rmse; clipping to [0, 1] only lowers it)."""
    columns = np.arange(shape[1], dtype=np.float64)
    wave = np.sin(2.0 * np.pi * columns * frequency / shape[1])
    rms = np.sqrt(np.mean(np.square(wave)))
    wave *= rmse / rms if rms > 0 else 0.0
    return np.broadcast_to(wave[None, :, None], shape).astype(np.float32)
def make(psnr, surrogate, images, labels, target, logit_scale, seed, steps, anchor,
         grey=False):
    """SIG's trigger at `psnr` dB (the sinusoid needs neither surrogate nor data; it is the
    same in every channel, grey or not)."""
    del surrogate, labels, target, logit_scale, seed, steps, anchor, grey
    return budgeted.additive(sig_pattern(images.shape[1:], budgeted.radius_of(
        images.shape[1:], psnr)[0]))


budgeted.register("sig", "SIG (Barni et al., ICIP 2019): a horizontal sinusoid", make,
                  ("baseline", "bench", "frontier", "probe"), 30, uses_anchor=False)
