"""moleseg: dermoscopy border analysis and two-class microscopy segmentation.

The numpy half of the package (image input, targets, cleanup, metrics, measurements, rendering,
reports, the classical baseline) never imports TensorFlow; the model, data and training modules do.
"""

__version__ = "0.1.0"
