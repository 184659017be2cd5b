"""Data sets: the ``imdb`` base class, PASCAL VOC / VOC-format sets, COCO, and
``factory.get_imdb(name)`` to get one by name."""
