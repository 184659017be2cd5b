"""caffe.TRAIN and caffe.TEST.

pycaffe's phases are Boost.Python enum values: they compare equal to 0 and 1 and print as
`TRAIN` and `TEST`. py-faster-rcnn relies on the latter (`cfg[str(self.phase)]`).
"""
import enum


class Phase(enum.IntEnum):
    TRAIN = 0
    TEST = 1

    def __str__(self) -> str:
        return self.name

    __format__ = object.__format__


TRAIN = Phase.TRAIN
TEST = Phase.TEST
