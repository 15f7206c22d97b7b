"""Every pyarrow schema of the toolkit: the manifest tables, class lists, feature shards, proposals,
audit results and Hugging Face export shards. Parquet I/O is :mod:`eic_builder.dataset.tables`.

Boxes use the toolkit's single convention: float pixel coordinates ``x1, y1, x2, y2``, 0-based,
``x2``/``y2`` exclusive (``w = x2 - x1``).
"""

from __future__ import annotations

import json

import pyarrow as pa

METADATA_KEY = b"eic"

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=True),  # image class: wnid or category name
        pa.field("wnid", pa.string(), nullable=True),  # set when the label is an ImageNet wnid
        pa.field("path", pa.string(), nullable=True),  # image file, relative to the scan root
        pa.field("annotation", pa.string(), nullable=True),  # annotation file, relative to the root
        pa.field("width", pa.int32(), nullable=False),  # pixels
        pa.field("height", pa.int32(), nullable=False),  # pixels
        pa.field("has_image", pa.bool_(), nullable=False),
        pa.field("n_boxes", pa.int32(), nullable=False),
        pa.field("archive", pa.string(), nullable=True),  # tar holding the image, relative to the root
        pa.field("offset", pa.int64(), nullable=True),  # bytes: start of the image's data in the archive
        pa.field("size", pa.int64(), nullable=True),  # bytes of the image file or member, when read
        pa.field("sha1", pa.string(), nullable=True),  # content hash, hex (archives always; files with --hash)
        pa.field("ann_width", pa.int32(), nullable=True),  # pixels: the size the annotation states, if any;
        pa.field("ann_height", pa.int32(), nullable=True),  # it may disagree with width/height (the header's)
    ]
)

BOXES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("box_index", pa.int32(), nullable=False),  # order within the annotation
        pa.field("label", pa.string(), nullable=False),
        pa.field("wnid", pa.string(), nullable=True),
        pa.field("x1", pa.float32(), nullable=False),
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),  # exclusive
        pa.field("y2", pa.float32(), nullable=False),  # exclusive
        pa.field("area_ratio", pa.float32(), nullable=False),  # box area / image area, in [0, 1]
        pa.field("is_small", pa.bool_(), nullable=False),
        pa.field("is_twisted", pa.bool_(), nullable=False),
    ]
)

REJECTS_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),  # file, relative to the scan root
        pa.field("image_id", pa.string(), nullable=True),
        pa.field("level", pa.string(), nullable=False),  # "file" or "box"
        pa.field("reason", pa.string(), nullable=False),  # a short code, see SCHEMA.md
        pa.field("detail", pa.string(), nullable=False),
    ]
)

# --- class lists and the WordNet noun index -----------------------------------------------------

EIC_CLASSES_SCHEMA = pa.schema(
    [
        pa.field("wnid", pa.string(), nullable=False),
        pa.field("lemma", pa.string(), nullable=False),
        pa.field("gloss", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # "ilsvrc1k" or "expanded"
        pa.field("lexname", pa.string(), nullable=False),  # WordNet lexicographer file
        pa.field("depth", pa.int16(), nullable=False),  # shortest hypernym path to entity.n.01
        pa.field("nearest_ilsvrc", pa.string(), nullable=False),  # nearest ILSVRC class (itself for ILSVRC)
        pa.field("ilsvrc_hops", pa.int16(), nullable=False),  # hypernym/hyponym edges to it (-1: unconnected)
        pa.field("image_count", pa.int64(), nullable=True),  # images per class, when real counts were given
        pa.field("image_count_source", pa.string(), nullable=False),
    ]
)

NOUN_INDEX_SCHEMA = pa.schema(
    [
        pa.field("wnid", pa.string(), nullable=False),
        pa.field("lemma", pa.string(), nullable=False),  # first lemma, underscores as spaces
        pa.field("gloss", pa.string(), nullable=False),
        pa.field("lexname", pa.string(), nullable=False),  # lexicographer file, e.g. noun.animal
        pa.field("depth", pa.int16(), nullable=False),  # shortest hypernym path to entity.n.01 (0)
        pa.field("hypernyms", pa.list_(pa.string()), nullable=False),  # hypernyms + instance hypernyms
    ]
)

ILSVRC_SCHEMA = pa.schema(
    [
        pa.field("class_index", pa.int32(), nullable=False),  # 0..999, the usual ILSVRC-2012 order
        pa.field("wnid", pa.string(), nullable=False),
        pa.field("lemma", pa.string(), nullable=False),
        pa.field("gloss", pa.string(), nullable=False),
    ]
)


SCHEMAS: dict[str, pa.Schema] = {
    "images": IMAGES_SCHEMA,
    "boxes": BOXES_SCHEMA,
    "rejects": REJECTS_SCHEMA,
    "eic_classes": EIC_CLASSES_SCHEMA,
    "wordnet_nouns": NOUN_INDEX_SCHEMA,
    "ilsvrc_classes": ILSVRC_SCHEMA,
}



# --- fc6 feature shards -------------------------------------------------------------------------

FEATURE_DIM = 4096

FEATURE_BYTES = FEATURE_DIM * 2
# A feature is stored as 8,192 bytes: 4,096 little-endian float16 values. Parquet stores a
# fixed-size list with a repetition level per element, which reads about 10x slower than
# one fixed-size binary value per row (measured: 0.7 GiB in 8 s against 0.8 s).
FEATURES_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("box_index", pa.int32(), nullable=False),  # -1 for whole-image features
        pa.field("label", pa.string(), nullable=True),  # the image's (or box's) class
        pa.field("feature", pa.binary(FEATURE_BYTES), nullable=False),  # fc6: 4096 x float16 ('<f2')
    ]
)
FEATURE_ROW_GROUP = 4096  # 32 MiB of features: what a streaming reader holds at once



# --- region proposals (eval-baseline) -----------------------------------------------------------

PROPOSALS_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False),  # 0 = best
        pa.field("score", pa.float32(), nullable=False),
        pa.field("x1", pa.float32(), nullable=False),  # original-image pixels, x2/y2 exclusive
        pa.field("y1", pa.float32(), nullable=False),
        pa.field("x2", pa.float32(), nullable=False),
        pa.field("y2", pa.float32(), nullable=False),
    ]
)


# --- duplicates found by ``audit`` --------------------------------------------------------------

# One row per pair of images found alike by one method; side ``a`` comes first in the audit's order
# (manifests as given, images in manifest order). ``score``: 1.0 for ``exact`` (same SHA-1),
# ``1 - hamming / 64`` for ``perceptual`` (64-bit pHash), the cosine of the fc6 features for ``features``.
_SIDE = [("manifest", pa.string(), False), ("split", pa.string(), False), ("image_id", pa.string(), False),
         ("label", pa.string(), True)]
AUDIT_PAIRS_SCHEMA = pa.schema(
    [pa.field("method", pa.string(), nullable=False), pa.field("score", pa.float32(), nullable=False),
     # exact | reencoded | resized | mirrored | cropped | "" (eic_builder.audit.likely)
     pa.field("likely", pa.string(), nullable=False)]
    + [pa.field(f"{name}_{side}", kind, nullable=nullable) for side in "ab" for name, kind, nullable in _SIDE]
)
# One row per image in a group: the connected components of the pairs (all methods together).
AUDIT_GROUPS_SCHEMA = pa.schema(
    [pa.field("group", pa.int32(), nullable=False), pa.field("size", pa.int32(), nullable=False)]
    + [pa.field(name, kind, nullable=nullable) for name, kind, nullable in _SIDE]
)



# --- Hugging Face export shards (``export --format hf``) -------------------------------------

# One row per image, as the Hugging Face ``datasets`` object-detection sets are laid out: the image
# (its encoded bytes), its size, and its boxes as ``objects`` (a struct of lists). ``bbox`` is
# ``[x, y, w, h]`` in pixels (COCO's convention, the one ``datasets`` detection sets use); ``category``
# indexes the class names stored in the ``huggingface`` schema metadata (a ``ClassLabel``).
HF_IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])
HF_OBJECTS_TYPE = pa.struct([pa.field("bbox", pa.list_(pa.list_(pa.float32(), 4))),
                             pa.field("category", pa.list_(pa.int64()))])
HF_SCHEMA = pa.schema(
    [
        pa.field("image", HF_IMAGE_TYPE),
        pa.field("image_id", pa.string()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("label", pa.string()),  # the image's class, named as --labels says; null without one
        pa.field("objects", HF_OBJECTS_TYPE),
    ]
)
HF_ROW_GROUP = 100  # images per row group: what the Hub's viewer and streaming readers expect of image sets


def hf_schema(class_names: list[str]) -> pa.Schema:
    """:data:`HF_SCHEMA` with the ``huggingface`` metadata ``datasets`` reads its features from.

    The features are written in the ``Sequence`` form that every ``datasets`` release since 2.0 reads
    (5.x still does; it writes ``List``), so that the files load there without conversion.
    """
    value = {"_type": "Value"}
    features = {
        "image": {"_type": "Image"},
        "image_id": {**value, "dtype": "string"},
        "width": {**value, "dtype": "int32"},
        "height": {**value, "dtype": "int32"},
        "label": {**value, "dtype": "string"},
        "objects": {"_type": "Sequence", "feature": {
            "bbox": {"_type": "Sequence", "length": 4, "feature": {**value, "dtype": "float32"}},
            "category": {"_type": "ClassLabel", "names": list(class_names)},
        }},
    }
    return HF_SCHEMA.with_metadata({b"huggingface": json.dumps({"info": {"features": features}}).encode()})


SCHEMAS["features"] = FEATURES_SCHEMA
SCHEMAS["proposals"] = PROPOSALS_SCHEMA
SCHEMAS["audit_pairs"] = AUDIT_PAIRS_SCHEMA
SCHEMAS["audit_groups"] = AUDIT_GROUPS_SCHEMA
