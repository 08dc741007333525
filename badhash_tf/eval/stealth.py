"""Invisibility of a trigger: PSNR, SSIM and L-infinity between original and triggered
images (float [N, H, W, 3] in [0, 1]): means over images, and the worst image (a mean can
hide a few visible copies)."""

import numpy as np
import tensorflow as tf


def stealth_metrics(original, triggered):
    """-> {psnr (dB), ssim, linf (in [0, 1] units), linf_255 (in pixel levels), psnr_min,
    ssim_min (the worst image), identical}.

    An image identical to its original has infinite PSNR; it is counted as 100 dB so the
    mean stays finite (and the count of such images is reported as `identical`)."""
    original = tf.convert_to_tensor(original, tf.float32)
    triggered = tf.convert_to_tensor(triggered, tf.float32)
    if original.shape != triggered.shape:
        raise ValueError(f"original {original.shape} and triggered {triggered.shape} differ")
    psnr = tf.image.psnr(original, triggered, max_val=1.0).numpy()
    identical = ~np.isfinite(psnr)
    ssim = tf.image.ssim(original, triggered, max_val=1.0).numpy()
    linf = tf.reduce_max(tf.abs(original - triggered), axis=[1, 2, 3]).numpy()
    psnr = np.where(identical, 100.0, psnr)
    return {"psnr": float(psnr.mean()), "psnr_min": float(psnr.min()),
            "ssim": float(ssim.mean()), "ssim_min": float(ssim.min()),
            "linf": float(linf.mean()),
            "linf_255": float(linf.mean() * 255.0), "identical": int(identical.sum())}
