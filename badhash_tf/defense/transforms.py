"""Query-time input transforms a defender applies to every query before hashing it: images
float32 [B, S, S, 3] in [0, 1] -> the same shape and range. Each takes its strength."""

import math

import tensorflow as tf

from badhash_tf import registry


def jpeg(images, quality):
    """JPEG re-encoding at `quality` (1-100)."""
    return tf.map_fn(lambda image: tf.image.adjust_jpeg_quality(image, int(quality)),
                     tf.convert_to_tensor(images, tf.float32))


def gaussian_blur(images, sigma):
    """Separable Gaussian blur of standard deviation `sigma` pixels (kernel 2 ceil(2 sigma)
    + 1, reflected borders)."""
    images = tf.convert_to_tensor(images, tf.float32)
    radius = max(1, math.ceil(2 * sigma))
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    kernel = tf.exp(-0.5 * tf.square(x / sigma))
    kernel /= tf.reduce_sum(kernel)
    channels = images.shape[-1]
    padded = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], "REFLECT")
    rows = tf.tile(tf.reshape(kernel, [-1, 1, 1, 1]), [1, 1, channels, 1])
    cols = tf.tile(tf.reshape(kernel, [1, -1, 1, 1]), [1, 1, channels, 1])
    out = tf.nn.depthwise_conv2d(padded, rows, [1, 1, 1, 1], "VALID")
    return tf.clip_by_value(tf.nn.depthwise_conv2d(out, cols, [1, 1, 1, 1], "VALID"), 0.0, 1.0)


def down_up(images, factor):
    """Bilinear resize to `factor` of the side (antialiased), then back."""
    images = tf.convert_to_tensor(images, tf.float32)
    size = images.shape[1:3]
    small = [max(1, round(s * factor)) for s in size]
    out = tf.image.resize(tf.image.resize(images, small, antialias=True), size)
    return tf.clip_by_value(out, 0.0, 1.0)


def bit_depth(images, bits):
    """Colour depth reduced to `bits` bits per channel (feature squeezing)."""
    levels = float(2 ** int(bits) - 1)
    return tf.round(tf.clip_by_value(images, 0.0, 1.0) * levels) / levels


TRANSFORMS = {"jpeg": jpeg, "blur": gaussian_blur, "resize": down_up, "bit_depth": bit_depth}


def apply(name, images, strength, batch_size=256):
    """Transform `name` at `strength` over a float array [N, S, S, 3], in batches."""
    fn = TRANSFORMS[name]
    return tf.concat([fn(images[i:i + batch_size], strength)
                      for i in range(0, len(images), batch_size)], 0).numpy()


def _defense(name, field):
    """Every query (triggered and clean) transformed by `name` at the strength
    DefenseConfig.`field` before the attacked victim hashes it."""
    def run(defender, out):
        del out  # (nothing is trained)
        v, strength = defender.variant, getattr(defender.config, field)
        triggered = apply(name, v.triggered[0], strength)
        clean = apply(name, defender.queries[0], strength)
        return {"t_map": defender.t_map(v.victim, triggered),
                "clean_map": defender.clean_map(v.victim, clean), "strength": strength}
    return run


for _order, (_name, _field, _summary) in enumerate((
        ("jpeg", "jpeg_quality", "JPEG re-encoding of every query"),
        ("blur", "blur_sigma", "Gaussian blur of every query"),
        ("resize", "resize_factor", "every query shrunk, then enlarged back"),
        ("bit_depth", "bit_depth", "every query's bits per channel reduced"))):
    registry.register_defense(registry.DefenseSpec(
        _name, _summary, "transform", _defense(_name, _field), fields=(_field,),
        order=_order))
