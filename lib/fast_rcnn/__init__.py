"""Fast R-CNN detector core: configuration, box regression, NMS wrapper.

The training and testing drivers (``fast_rcnn.train``, ``fast_rcnn.test``) live
beside these modules; nothing is imported here so that ``import fast_rcnn``
stays cheap and free of the engine.
"""
