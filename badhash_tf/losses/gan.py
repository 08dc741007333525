"""The cGAN's terms: reconstruction, the hash term against the surrogate, LSGAN.

Per-example functions return [B] so `tf.nn.compute_average_loss` over the global batch,
summed over replicas, equals the single-device loss.
"""

import tensorflow as tf

SSIM_WINDOW = 11  # tf.image.ssim's default Gaussian window


def reconstruction_loss(generated, images):
    """MSE + (1 - SSIM) per example, images [B, H, W, 3] in [0, 1] -> [B].

    The MSE is on [0, 1] pixels, as the release computes it (only the generator's input is
    ImageNet-normalised). SSIM stands in for the paper's LPIPS, whose pretrained weights
    cannot be fetched here; both images are reflect-padded by half its window first:
    tf.image.ssim's windows are 'valid', so without padding a 5-pixel border is invisible
    to it and the generator hides its trigger there."""
    mse = tf.reduce_mean(tf.square(generated - images), [1, 2, 3])
    half = SSIM_WINDOW // 2
    pad = lambda x: tf.pad(x, [[0, 0], [half, half], [half, half], [0, 0]], mode="REFLECT")
    return mse + (1.0 - tf.image.ssim(pad(generated), pad(images), max_val=1.0))


def hash_alignment_loss(u, target_code):
    """1 - mean_k(u_k * sign(c_k)) per example: u [B, K] the frozen surrogate's output on the
    poisoned image, target_code [K] or [B, K] -> [B]. On raw logits (the release) the term
    is unbounded below and its gradient is -sign(c_k) / K per bit whatever the logit size;
    on codes in (-1, 1) it is 0 when every bit matches."""
    return 1.0 - tf.reduce_mean(u * tf.sign(target_code), -1)


def lsgan_loss(outputs, targets):
    """Least-squares GAN loss per example: mean_j (D_j(x) - t_j)^2, outputs/targets
    [B, C + 1] (label units, then the real/fake unit) -> [B]."""
    return tf.reduce_mean(tf.square(outputs - targets), -1)


def discriminator_targets(labels, fake):
    """[label, 0] for real images, [label, 1] for generated ones (the release's convention:
    0 = real, 1 = fake). labels [B, C] -> [B, C + 1]."""
    unit = tf.ones_like(labels[:, :1]) if fake else tf.zeros_like(labels[:, :1])
    return tf.concat([labels, unit], -1)
