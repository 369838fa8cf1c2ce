"""The offline demo in one place: real Fashion-MNIST images in 2x2 mosaics, multi-label like
COCO, with pretrained EfficientNet-Lite0 features (what `make demo` and `lagnh demo` run on).

What is real and what is constructed:

- real: the images (Fashion-MNIST photographs of clothing, 28x28 grey;
  :mod:`~lagnh_pyg.demo.fashion_mnist`) and the feature network (EfficientNet-Lite0 with its
  ImageNet weights, shipped offline);
- constructed: the mosaics and their labels (:mod:`~lagnh_pyg.demo.mosaics`), and the
  auxiliary semantics: an independent tile "detector" (:mod:`~lagnh_pyg.demo.detector`) or
  noisy tags.

:mod:`~lagnh_pyg.demo.build` writes the dataset directory (``lagnh data demo``);
:mod:`~lagnh_pyg.demo.pipeline` is the main job on it (``lagnh demo``): train, fit the
baselines, evaluate, report.
"""
