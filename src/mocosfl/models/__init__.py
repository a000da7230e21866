"""Split-able backbones (flat layer lists), the client/server split and the projection heads."""

from mocosfl.models.heads import BYOLHead, ProjectionHead
from mocosfl.models.layers import (
    INITS,
    STEMS,
    WSConv2d,
    conv2d,
    init_legacy_,
    init_weights_,
    init_xavier_,
    make_norm,
)
from mocosfl.models.mobilenet import mobilenetv2_layers
from mocosfl.models.resnet import resnet18_layers, resnet50_layers
from mocosfl.models.split import (
    ARCHITECTURES,
    SplitModel,
    build_backbone,
    build_split_model,
    parse_bottleneck,
)
from mocosfl.models.vgg import vgg13_layers

__all__ = [
    "ARCHITECTURES",
    "INITS",
    "STEMS",
    "BYOLHead",
    "ProjectionHead",
    "SplitModel",
    "WSConv2d",
    "build_backbone",
    "build_split_model",
    "conv2d",
    "init_legacy_",
    "init_weights_",
    "init_xavier_",
    "make_norm",
    "mobilenetv2_layers",
    "parse_bottleneck",
    "resnet18_layers",
    "resnet50_layers",
    "vgg13_layers",
]
