"""Only for bench/gpu_check.py, which still imports make_image_folder from here; the benchmarks' other modules
import testsupport directly. Delete this file once gpu_check.py does too."""

from testsupport.images import make_image_folder

__all__ = ["make_image_folder"]
