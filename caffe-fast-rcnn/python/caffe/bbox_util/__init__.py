"""Box maths of SSD and RefineDet (Caffe's util/bbox_util), on tensors.

One home for what the detection layers (MultiBoxLoss, DetectionOutput, DetectionEvaluate)
and the annotated-data augmentation share, one module per concern:

  boxes     sizes, Jaccard overlaps, clipping, encoding/decoding against priors
            (CORNER, CENTER_SIZE, CORNER_SIZE), mapping back to original images
  matching  the label blob as padded ground truth; bipartite / per-prediction matching
  mining    confidence and localisation losses per prior; hard-example mining
  nms       Caffe's greedy NMS (ApplyNMS, ApplyNMSFast with top_k and eta)
  ap        average precision (11point, MaxIntegral, Integral)

Boxes are rows of [xmin, ymin, xmax, ymax] in normalised image coordinates unless a
function says otherwise. Everything is vectorised over boxes and over the images of a
batch; no function loops over priors or boxes in Python.
"""
from .boxes import (BoxError, bbox_size, clip_bbox, decode_bbox, encode_bbox,  # noqa: F401
                    is_cross_boundary, jaccard_overlap, output_bbox, sized_jaccard_overlap)
from .matching import (GroundTruth, GroundTruthError, get_ground_truth,  # noqa: F401
                       match_bbox)
from .mining import (Mined, conf_loss, eligible_for_mining, loc_loss,  # noqa: F401
                     loc_loss_grad, logistic_terms, mine_hard_examples)
from .nms import (apply_nms, apply_nms_fast, apply_nms_fast_grouped,  # noqa: F401
                  apply_nms_grouped, nms_ordered_groups, select_candidates)
from .ap import AP_VERSIONS, compute_ap  # noqa: F401
