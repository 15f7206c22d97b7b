"""The manifest and everything that reads or writes one: the dataset object every stage takes
(:class:`~eic_builder.dataset.manifest.Manifest`), the schemas, all Parquet I/O, the feature-shard codec
and the typed rows scans make.

* :mod:`~eic_builder.dataset.manifest`: ``Manifest``, ``open_manifest``, ``read_manifest``, ``write_manifest``
* :mod:`~eic_builder.dataset.schemas`: every pyarrow schema of the toolkit
* :mod:`~eic_builder.dataset.tables`: Parquet read/write with schema checks and provenance records
* :mod:`~eic_builder.dataset.feature_shards`: fc6 feature shards
* :mod:`~eic_builder.dataset.rows`: ``ImageRow``, ``BoxRow``, ``RejectRow``
"""
