"""The network classes a bundle or plan may name, as dotted paths: a module without torch, so that checking a
manifest (``inference.manifest``) does not import torch in processes that never run a network (the web server, the
Slicer module before Apply)."""

NETWORK_CLASS = "pedtumorseg.model.network.PedTumorSegNet"
PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESENC_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"
LIGHT_UNET3D = "pedtumorseg.model.baselines.LightUNet3D"
RESSELKA_UNET2D = "pedtumorseg.model.baselines.ResSELKAUNet2D"
MONAI_UNET = "monai.networks.nets.UNet"
MONAI_SEGRESNET = "monai.networks.nets.SegResNet"
MONAI_UNETR = "monai.networks.nets.UNETR"
DNA_CLASSES = frozenset({PLAIN_UNET, RESENC_UNET})
MONAI_CLASSES = frozenset({MONAI_UNET, MONAI_SEGRESNET, MONAI_UNETR})
#: class paths that ``build_network`` (and the bundle loader through it) will instantiate
ALLOWED_CLASSES: frozenset[str] = (frozenset({NETWORK_CLASS, LIGHT_UNET3D, RESSELKA_UNET2D}) | DNA_CLASSES
                                   | MONAI_CLASSES)
