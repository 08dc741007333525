"""The pretraining classifier: a hashing backbone with a softmax class head, trained on a
public pool so that the surrogate and the victims can fine-tune one shared backbone (the
paper's ImageNet-pretrained ResNet50/VGG11, in miniature).

Input: images float32 [B, H, W, 3] in [0, 1]; output: class logits [B, num_classes].
"""

import keras
from keras import layers

from badhash_tf.models.hashing import backbone_input, make_backbone


@keras.saving.register_keras_serializable(package="badhash_tf")
class BackboneClassifier(keras.Model):
    """backbone (models.hashing.make_backbone) + Dense(num_classes).
    call(images [B,H,W,3]) -> logits [B, num_classes]."""

    def __init__(self, num_classes, backbone="small_cnn", image_size=32, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.backbone_name, self.image_size = (num_classes, backbone,
                                                                 image_size)
        self.backbone = make_backbone(backbone, image_size)
        self.class_layer = layers.Dense(num_classes, name="class_layer", dtype="float32")
        self.build((None, image_size, image_size, 3))

    def build(self, input_shape):
        self.backbone.build(input_shape)
        self.class_layer.build(self.backbone.compute_output_shape(input_shape))
        super().build(input_shape)

    def call(self, images, training=False):
        features = self.backbone(backbone_input(self.backbone_name, images), training=training)
        return self.class_layer(features)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "backbone": self.backbone_name, "image_size": self.image_size}
