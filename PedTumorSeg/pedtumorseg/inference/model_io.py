"""What a bundle's network reads and writes (DEVELOPING "Model bundle", keys ``inputs``, ``outputs``,
``transpose_forward`` and the ``nnunet`` normalization): the defaults are this project's own networks (the four
channels in ``CHANNELS`` order, softmax over background + the four labels, no transpose); an imported nnU-Net v2
model (``pedtumorseg_train.import_nnunet``) may differ in each of them.

- ``inputs``: the channels the network reads, in its input order (a subset or a permutation of ``CHANNELS``);
- ``outputs``: ``{"activation": "softmax", "labels": [...]}`` - output channel i stands for label ``labels[i]``
  (0 = background; several channels may stand for background, their probabilities are summed), the label map is
  the argmax of the network's own channels, as nnU-Net's ``LabelManager``; or ``{"activation": "sigmoid",
  "labels": [...]}`` - a region-based model: output channel i is a region, and the label map is painted channel by
  channel, label ``labels[i]`` wherever its sigmoid exceeds 0.5, later channels over earlier ones (nnU-Net's
  ``regions_class_order``). Its class probabilities are derived as if the regions were independent:
  p(label of channel i) = s_i * prod_{j > i} (1 - s_j), background prod_j (1 - s_j) (they sum to 1);
- ``transpose_forward``: nnU-Net's axis permutation of the (z, y, x) image before preprocessing (the network's
  ``patch_size`` and ``mirror_axes`` are in the permuted order, ``spacing_zyx`` in the image's);
- ``labels``: which of the four labels the model can produce (a model without a cystic label has no "3").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pedtumorseg.conventions import CHANNELS, LABEL_NAMES, NUM_CLASSES

ACTIVATIONS = ("softmax", "sigmoid")
#: nnU-Net v2 normalization schemes the engine reproduces (``pedtumorseg.inference.preprocessing.normalize``)
NNUNET_SCHEMES = ("ZScoreNormalization", "CTNormalization", "NoNormalization", "RescaleTo01Normalization")
CT_KEYS = ("mean", "std", "percentile_00_5", "percentile_99_5")


@dataclass(frozen=True)
class ModelIO:
    inputs: tuple[int, ...]  # indices into CHANNELS, in network input order
    activation: str  # "softmax" or "sigmoid"
    output_labels: tuple[int, ...]  # label (0..4) each output channel stands for
    transpose_forward: tuple[int, int, int]
    labels: tuple[int, ...]  # the foreground labels the model produces

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.output_labels)

    @property
    def transpose_backward(self) -> tuple[int, int, int]:
        return tuple(int(i) for i in np.argsort(self.transpose_forward))

    @property
    def transposed(self) -> bool:
        return self.transpose_forward != (0, 1, 2)

    def to_classes(self, logits):
        """(K, ...) network logits (a float32 torch tensor) -> (class probabilities (5, ...) float32 numpy,
        labels uint8 numpy) by the model's activation (module docstring)."""
        import torch
        if self.activation == "softmax":
            probs = torch.softmax(logits, 0)
            labels = np.asarray(self.output_labels, dtype=np.uint8)[probs.argmax(0).numpy()]
            if self.output_labels == tuple(range(NUM_CLASSES)):
                return probs.numpy(), labels
            out = torch.zeros((NUM_CLASSES, *logits.shape[1:]), dtype=torch.float32)
            for i, label in enumerate(self.output_labels):
                out[label] += probs[i]
            return out.numpy(), labels
        s = torch.sigmoid(logits)
        labels = np.zeros(logits.shape[1:], dtype=np.uint8)
        out = torch.zeros((NUM_CLASSES, *logits.shape[1:]), dtype=torch.float32)
        rest = torch.ones(logits.shape[1:], dtype=torch.float32)  # prod_{j > i} (1 - s_j)
        for i in reversed(range(len(self.output_labels))):
            out[self.output_labels[i]] += s[i] * rest
            rest = rest * (1 - s[i])
        out[0] += rest
        for i, label in enumerate(self.output_labels):
            labels[(s[i] > 0.5).numpy()] = label
        return out.numpy(), labels


def model_io(manifest: dict) -> ModelIO:
    """The manifest's network I/O (module docstring; defaults for the keys it lacks). Assumes a validated
    manifest."""
    inputs = tuple(CHANNELS.index(c) for c in manifest.get("inputs", CHANNELS))
    outputs = manifest.get("outputs", {"activation": "softmax", "labels": list(range(NUM_CLASSES))})
    labels = tuple(sorted(int(k) for k in manifest["labels"]))
    return ModelIO(inputs, str(outputs["activation"]), tuple(int(v) for v in outputs["labels"]),
                   tuple(int(a) for a in manifest.get("transpose_forward", (0, 1, 2))), labels)


def check_model_io(manifest: dict, bad) -> int:
    """Validate ``labels``, ``inputs``, ``outputs`` and ``transpose_forward`` (``bad(problem)`` raises); returns the
    number of network inputs."""
    expected = {str(v): n for v, n in LABEL_NAMES.items()}
    labels = manifest["labels"]
    if (not isinstance(labels, dict) or not labels
            or any(expected.get(str(k)) != v for k, v in labels.items())):
        bad(f"labels {labels!r} must be a non-empty subset of {expected!r}")
    inputs = manifest.get("inputs", list(CHANNELS))
    if (not isinstance(inputs, list) or not inputs or any(c not in CHANNELS for c in inputs)
            or len(set(inputs)) != len(inputs)):
        bad(f"inputs {inputs!r} must be distinct channel names from {list(CHANNELS)!r}")
    outputs = manifest.get("outputs", {"activation": "softmax", "labels": list(range(NUM_CLASSES))})
    if not isinstance(outputs, dict) or outputs.get("activation") not in ACTIVATIONS:
        bad(f"outputs {outputs!r} must be an object with activation one of {ACTIVATIONS}")
    out_labels = outputs.get("labels")
    allowed = {0} | {int(k) for k in labels}
    if (not isinstance(out_labels, list) or len(out_labels) < (2 if outputs["activation"] == "softmax" else 1)
            or any(not isinstance(v, int) or isinstance(v, bool) or v not in allowed for v in out_labels)):
        bad(f"outputs.labels {out_labels!r} must list, per output channel, a label of {sorted(allowed)}")
    tf = manifest.get("transpose_forward", [0, 1, 2])
    if not (isinstance(tf, list) and sorted(tf) == [0, 1, 2] and all(isinstance(a, int) for a in tf)):
        bad(f"transpose_forward must be a permutation of [0, 1, 2], got {tf!r}")
    return len(inputs)


def check_nnunet_normalization(norm: dict, n_inputs: int, bad) -> None:
    """``{"scheme": "nnunet", "schemes": [...], "use_mask_for_norm": [...], "intensity_properties": [...]}``: one
    nnU-Net scheme per network input, CT intensity properties where the scheme is ``CTNormalization``."""
    schemes, props = norm.get("schemes"), norm.get("intensity_properties", [None] * n_inputs)
    if not (isinstance(schemes, list) and len(schemes) == n_inputs and all(s in NNUNET_SCHEMES for s in schemes)):
        bad(f"normalization.schemes must be {n_inputs} of {', '.join(NNUNET_SCHEMES)}, got {schemes!r}")
    if not (isinstance(props, list) and len(props) == n_inputs):
        bad(f"normalization.intensity_properties must have {n_inputs} entries, got {props!r}")
    for s, p in zip(schemes, props):
        if s == "CTNormalization" and not (isinstance(p, dict) and all(
                isinstance(p.get(k), (int, float)) and not isinstance(p.get(k), bool) for k in CT_KEYS)):
            bad(f"CTNormalization needs intensity properties {', '.join(CT_KEYS)}, got {p!r}")
