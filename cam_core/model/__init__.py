"""Model surgery: where a CAM method cuts a network and what it asks of it.

- :mod:`~cam_core.model.split`: ``split_model`` (body up to the target layer, head after it), with
  :mod:`~cam_core.model.graph_split` (the torch.fx cut for models that are not plain chains);
- :mod:`~cam_core.model.layers`: resolving a target layer by name, listing layers; :mod:`~cam_core.model.map_layer`: the last map layer a split accepts;
- :mod:`~cam_core.model.targets`: a class index / tensor turned into one target per image.

May import: only the base modules (:mod:`cam_core.runtime`, :mod:`cam_core.names`). It is the lowest
package; everything else may import it (see cam_core/ARCHITECTURE.md).
"""
