"""The allowed values of every option with a fixed set of choices, defined once.

The command line (``click.Choice``), the library's checks (``check_choice`` in each stage and in the
config ``validate()`` methods) and the help text all read these tuples; a test checks that every
``click.Choice`` of ``eic-build`` is one of them. Torch-free and import-light, so that the command
line can read it before any stage is imported. The first value is the default where there is one.
"""

from __future__ import annotations

# synth
SYNTH_LAYOUTS = ("tree", "archives", "downloads", "hub")
# scan
SCAN_FORMATS = ("auto", "ilsvrc-xml", "voc-xml", "loc-csv", "coco")
# assemble
SHORT_POLICIES = ("skip", "refuse", "keep")
# filter
BOX_FLAGS = ("small", "twisted")
# stats
STATS_FORMATS = ("md", "csv", "latex", "json")
INTER_DISTANCES = ("cosine", "euclidean")  # stats --inter-distance: the two readings of the paper's row
# expand-classes
POOLS = ("bbox", "21k")
# features
FEATURE_TARGETS = ("image", "box")
FEATURE_LAYERS = ("fc6", "fc6-relu")
LOADERS = ("tensor", "pil")
DTYPES = ("auto", "float32", "bfloat16")
# every stage that runs a model or a search
DEVICES = ("auto", "cpu", "cuda")
# export
EXPORT_FORMATS = ("coco", "voc", "hf")
LABEL_STYLES = ("wnid", "name")
# audit
AUDIT_METHODS = ("exact", "perceptual", "features")
AUDIT_INDEXES = ("auto", "exact", "ivf")
# train-baseline
SAMPLING_STRATEGIES = ("base", "random", "balanced")
OPTIMIZERS = ("sgd", "adamw")
REG_LOSSES = ("smooth-l1", "giou")  # the RPN's box regression term
PROPOSAL_SCORES = ("object", "object-x-iou")  # what ranks the RPN's proposals: the paper's | x predicted IoU
QUALITY_ANCHORS = ("sampled", "object-gray")  # the sampled anchors the quality head learns the IoU of
ARCHS = ("hourglass", "downsample", "downsample-single")
ENCODERS = ("vgg16", "vgg11", "googlenet")
ANCHOR_SETS = (30, 9)
NORMS = ("bn", "none")
# eval-baseline
PEER_METHODS = ("selective-search", "sliding-window")
# experiment
EXPERIMENTS = ("components", "data-strategy")
