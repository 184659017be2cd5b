"""Exceptions the engine raises for problems a user can cause.

Each names what is wrong and where: the file (with line and column for text formats),
the layer, the blob or the parameter, so that a bad prototxt or weights file can be
fixed without reading a traceback from deep inside.
"""


class CaffeError(Exception):
    """Base class of the engine's user-facing errors."""


class ParseError(CaffeError):
    """A prototxt or binary proto file that cannot be read."""

    def __init__(self, path: str, message: str, line: int = None, column: int = None):
        self.path, self.line, self.column = path, line, column
        where = path if line is None else '%s:%d:%d' % (path, line, column or 0)
        super().__init__('%s: %s' % (where, message))


class NetError(CaffeError):
    """A net that cannot be built: unknown layer type, missing bottom, bad wiring."""


class ShapeError(CaffeError):
    """Blob or parameter shapes that do not fit a layer."""


class LayerError(CaffeError, RuntimeError):
    """An error raised while a layer ran, with the layer's name attached.

    Also a RuntimeError: pycaffe surfaces any exception from a layer (a Python layer's
    included) as RuntimeError, and scripts catch it as such.
    """


class ImageError(CaffeError, OSError):
    """An image file (or encoded image) that cannot be used: missing, unreadable,
    truncated or not an image. An OSError too, as OpenCV/PIL read failures are."""
