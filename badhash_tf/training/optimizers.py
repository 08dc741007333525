"""Optimizers and schedules of every stage: the victims' Adam/RMSprop with coupled L2 and
tanh continuation, the attacker's Adam(0.5, 0.999) with its step and linear-decay
schedules."""

import keras
import tensorflow as tf

RELEASE_ADAM = {"beta_1": 0.5, "beta_2": 0.999}  # the release's LabCLN and GAN optimizers


def make_optimizer(name, learning_rate, **kwargs):
    """'adam' | 'rmsprop' -> a Keras 3 optimizer; `learning_rate` a float or a schedule,
    `kwargs` for Adam (e.g. RELEASE_ADAM). RMSprop as torch's default, which the release
    uses: rho (torch's alpha) 0.99 and eps 1e-8 outside the square root (Keras adds
    epsilon inside it: 1e-16 there is the same to within 1e-8). Made under a float16
    policy (loop.dtype_policy), it scales the loss dynamically (LossScaleOptimizer: steps
    take gradients of `optimizer.scale_loss(loss)`; every optimizer has that method)."""
    if name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate, **kwargs)
    elif name == "rmsprop":
        optimizer = keras.optimizers.RMSprop(learning_rate, rho=0.99, epsilon=1e-16)
    else:
        raise ValueError(f"--optimizer={name}: choose adam or rmsprop")
    if keras.config.dtype_policy().name == "mixed_float16":
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def tanh_scale(method, epoch, step_continuation=20):
    """The scale s of the hash layer's tanh(s z) in epoch `epoch` (from 0; an int or an
    integer tensor) -> float32 scalar tensor, as the release's trainers set it: HashNet's
    continuation sqrt(epoch // step_continuation + 1); CSQ's plain tanh (1). DPSH, absent
    from the release, keeps 1 as in its own paper (a tanh relaxation with a quantization
    term, no continuation)."""
    if method == "hashnet":
        return tf.sqrt(tf.cast(epoch // step_continuation + 1, tf.float32))
    return tf.constant(1.0)


def coupled_l2(variables, weight_decay, num_replicas):
    """torch's `weight_decay` (wd * w added to every gradient) as a loss term of this
    replica: 0.5 * wd * sum ||w||^2 / replicas, since replica gradients are summed."""
    return 0.5 * weight_decay / num_replicas * tf.add_n(
        [tf.reduce_sum(tf.square(v)) for v in variables])


class ConstantThenLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The release's GAN schedule: `rate` for the first half, then linearly to 0."""

    def __init__(self, rate, total_steps):
        self.rate, self.total_steps = rate, total_steps

    def __call__(self, step):
        half = self.total_steps / 2
        left = (self.total_steps - tf.cast(step, tf.float32)) / max(half, 1.0)
        return self.rate * tf.clip_by_value(left, 0.0, 1.0)

    def get_config(self):
        return {"rate": self.rate, "total_steps": self.total_steps}
