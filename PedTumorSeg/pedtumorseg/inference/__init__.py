"""Stage: the network: model bundles, nnU-Net-compatible preprocessing, the sliding-window engine and its CPU
backends, and ``export``, the one way back from network output onto the input grid."""
