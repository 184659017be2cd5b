"""The training-time data path of Fast/Faster R-CNN.

``roidb``      turns an imdb's roidb into a trainable one (image paths and sizes,
               best class/overlap per box, normalised box regression targets);
``minibatch``  samples RoIs and builds the blobs of one training minibatch;
``layer``      ``RoIDataLayer``, the Caffe Python layer that feeds those blobs
               to the net (optionally from a prefetching process).
"""
