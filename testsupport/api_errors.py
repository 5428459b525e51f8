"""Refusals of the JSON API that more than one test module checks word for word."""

WEIGHTS_REFUSED = ('weights: must be "imagenet", "none", the id of an uploaded weights file (POST /api/v1/weights) '
                   "or the path of a file under TLBENCH_DATA_ROOTS")
