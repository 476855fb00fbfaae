"""Datasets: embedded synthetic images and CIFAR held in memory, ImageFolder trees read from disk.

`load_dataset(name, split, data_root)` looks for the data under the data root: the `data_root`
argument, else the DISCOMM_DATA environment variable, else ./data. CIFAR-10/100 may be there as
torchvision's own files, as an ImageFolder tree of image files, or as a tar.gz archive of that
tree. Decoded images are cached as uint8 tensors in $DISCOMM_CACHE, else ~/.cache/discomm_lite.

One module per concern (solo-learn's solo/data/ split): `types` (the two dataset types and the
errors), `loading` (`load_dataset`), `cifar`, `folders` and `archives` (the sources on disk),
`synthetic` (the embedded renderer), `standin` (the CIFAR-10 stand-in archive), `cache` and
`locations` (decoding, the tensor cache, the data root), `batches` (evaluation batches).
"""

from discomm_lite.choices import DATASETS, SPLITS
from discomm_lite.data.batches import default_num_workers, make_eval_batches
from discomm_lite.data.cifar import CIFAR10_CLASSES
from discomm_lite.data.folders import IMAGE_EXTENSIONS, write_image_folder
from discomm_lite.data.loading import load_dataset
from discomm_lite.data.locations import resolve_data_root
from discomm_lite.data.standin import CIFAR10_STANDIN, cifar10_standin_root, write_cifar10_standin
from discomm_lite.data.types import (
    DataFormatError,
    DatasetNotFoundError,
    ImageFolderDataset,
    ImageTensorDataset,
)

__all__ = [
    "CIFAR10_CLASSES", "CIFAR10_STANDIN", "DATASETS", "IMAGE_EXTENSIONS", "SPLITS",
    "DataFormatError", "DatasetNotFoundError", "ImageFolderDataset", "ImageTensorDataset",
    "cifar10_standin_root", "default_num_workers", "load_dataset", "make_eval_batches",
    "resolve_data_root", "write_cifar10_standin", "write_image_folder",
]
