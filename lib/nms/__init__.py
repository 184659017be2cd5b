"""Non-maximum suppression backends.

``nms.cpu_nms.cpu_nms``, ``nms.gpu_nms.gpu_nms`` and ``nms.py_cpu_nms.py_cpu_nms``
keep the import paths of py-faster-rcnn's compiled modules; all of them follow
the original semantics (+1 box areas, suppress when IoU > thresh).  Most code
should call ``fast_rcnn.nms_wrapper.nms``, which picks the device from cfg.
"""
