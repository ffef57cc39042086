"""Files in and out, under every wing: one image reader (headers checked before pixels), atomic writers that never
replace a file by accident, and the one error type for input a user can fix. Used by the weights (cache writes), the
hosts, training and the CLI.
"""

from .errors import InputNotFoundError, UserInputError
from .headers import (ImageHeader, ImageInputError, check_image, pixel_count, pixel_limit, prescan,
                      read_header)
from .images import IMAGE_EXTENSIONS, decode_image, list_images, load_image
from .tensor_files import TensorEntry, TensorFileReader, tensor_entry, write_state_dict, write_tensors
from .writers import WRITERS, json_safe, publish, read_exr, write_atomic, write_exr, write_npy, write_png16, write_png8

__all__ = [
    "IMAGE_EXTENSIONS", "ImageHeader", "ImageInputError", "InputNotFoundError", "TensorEntry", "TensorFileReader",
    "UserInputError", "WRITERS", "check_image", "decode_image", "json_safe", "list_images", "load_image",
    "pixel_count", "pixel_limit", "prescan", "publish", "read_exr", "read_header", "tensor_entry", "write_atomic",
    "write_exr", "write_npy", "write_png16", "write_png8", "write_state_dict", "write_tensors",
]
