"""The CAM methods: one base class (``base.BaseCAM``) and one short class per method."""
