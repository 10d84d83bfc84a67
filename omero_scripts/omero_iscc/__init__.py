"""omero-iscc helper package: ISCC-SUM codes for OMERO images.

Installed into the OMERO server's Python environment and imported by the OMERO.scripts in
``omero_scripts/`` and by the scheduler (``python -m omero_iscc``). The hashing is done by the
``omero-iscc`` worker binary; this package finds the files of each image, runs the worker, and
reads and writes the images' key-value annotations. Everything that talks to OMERO is in
``gateway.py``; the rest is plain logic, testable without a server.
"""

__version__ = "0.1.0"

#: Namespace of the MapAnnotation that carries an image's ISCC.
NAMESPACE = "org.iscc.omero.sum"
#: Namespace of the MapAnnotation that carries an image's pixel code (IMAGEWALK).
PIXELS_NAMESPACE = "org.iscc.omero.pixels"
#: Namespace of the duplicates notice the scheduler writes on a new image (docs/index.md).
DUPLICATES_NAMESPACE = "org.iscc.omero.duplicates"
#: Version of the annotation's key layout.
ANNOTATION_VERSION = "2.0"
