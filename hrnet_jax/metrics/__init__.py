"""The evaluation protocols' metrics: mIoU, top-k, COCO box / mask / keypoint AP (pycocotools),
PCKh, NME. Pure functions over arrays and rows; which protocol a run uses is its dataset's
(`summarize`) or its task's."""
