"""The attribution kernels the CAM methods are built on, each a function of (head, activations, target).

- :mod:`~cam_core.kernels.rescale`: DeepLIFT-Rescale through a head (``cc.deeplift``, LIFT-CAM's Eq. 9),
  its rules (:mod:`~cam_core.kernels.deeplift_rules`) and the node-by-node runner for traced heads
  (:mod:`~cam_core.kernels.deeplift_graph`);
- :mod:`~cam_core.kernels.lrp`: LRP-epsilon through a head;
- :mod:`~cam_core.kernels.shapley`: exact, sampled and closed-form Shapley values of feature maps (Eq. 6);
- :mod:`~cam_core.kernels.surrogate`: KernelSHAP and LIME over map coalitions.

May import: the base modules (:mod:`cam_core.runtime`, :mod:`cam_core.names`) and :mod:`cam_core.model`.
Never the methods, metrics, benchmarks, evaluation or book (see cam_core/ARCHITECTURE.md).
"""
