"""TFDS without TensorFlow: read prepared array_record datasets, and prepare one from an image folder.

Reading never constructs a registered builder class (whose constructor may look for metadata on
GCS, and whose ``download_and_prepare`` downloads): it locates
``DATA_DIR/NAME[/CONFIG]/VERSION/dataset_info.json`` on disk and opens that directory read-only
through the TFDS data-source API.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import tempfile

import tensorflow_datasets as tfds
from PIL import Image

from jaxviz.common.errors import DataError, UsageError
from jaxviz.common.images import read_image
from jaxviz.data.folders import FolderScan, scan_folder

__all__ = ["BuiltDataset", "build_tfds_from_folder", "parse_name", "resolve_data_dir", "open_split"]

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_CONFIG = re.compile(r"[A-Za-z0-9_.\-]+")
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_SPLIT = re.compile(r"[A-Za-z0-9_]+")
_FORMS = "tfds:NAME, tfds:NAME/SPLIT or tfds:NAME/CONFIG/SPLIT (NAME may end in :VERSION)"


def parse_name(text: str) -> tuple[str, str]:
    """Splits ``NAME[/CONFIG][:VERSION][/SPLIT]`` into ``(name, split)``; the split defaults to train.

    The last ``/`` part is the split whenever there is a ``/``, so a config needs an explicit split.
    The split may use TFDS slicing (``train[:10%]``) and ``+``.
    """
    name, sep, split = text.rpartition("/")
    if not sep:
        name, split = text, "train"
    _split_name(name, text)
    if not split:
        raise UsageError(f"empty split in 'tfds:{text}': expected {_FORMS}")
    return name, split


def _split_name(name: str, text: str | None = None) -> tuple[str, str | None, str | None]:
    base, _, version = name.partition(":")
    dataset, _, config = base.partition("/")
    if (not _NAME.fullmatch(dataset) or (config and not _CONFIG.fullmatch(config))
            or (version and not _VERSION.fullmatch(version)) or name.count(":") > 1):
        raise UsageError(f"bad TFDS dataset name in 'tfds:{text or name}': expected {_FORMS}")
    return dataset, config or None, version or None


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    """``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets`` (TFDS's own default)."""
    chosen = data_dir if data_dir is not None else os.environ.get("TFDS_DATA_DIR")
    return os.path.abspath(os.path.expanduser(os.fspath(chosen or "~/tensorflow_datasets")))


def _versions(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        return []
    found = [v for v in os.listdir(folder)
             if _VERSION.fullmatch(v) and os.path.isfile(os.path.join(folder, v, "dataset_info.json"))]
    return sorted(found, key=lambda v: tuple(int(x) for x in v.split(".")))


def _dataset_dir(name: str, data_dir: str) -> str:
    dataset, config, version = _split_name(name)
    base = os.path.join(data_dir, dataset, *([config] if config else []))
    versions = _versions(base)
    if version is not None:
        versions = [v for v in versions if v == version]
    if versions:
        return os.path.join(base, versions[-1])
    configs = sorted(c for c in (os.listdir(base) if os.path.isdir(base) else [])
                     if not config and _versions(os.path.join(base, c)))
    if configs:
        raise DataError(f"TFDS dataset {dataset!r} in {data_dir} has configs {', '.join(configs)}: "
                        f"name one, e.g. tfds:{dataset}/{configs[0]}/train")
    raise DataError(
        f"TFDS dataset {name!r} is not prepared in {data_dir} (no "
        f"{os.path.join(base, version or '<version>', 'dataset_info.json')}); jaxviz never downloads: "
        f"prepare it once in array_record format, e.g. tfds.builder({dataset!r}, data_dir={data_dir!r}, "
        f"file_format='array_record').download_and_prepare(), or from an image folder with "
        f"jaxviz.data.build_tfds_from_folder(FOLDER, {dataset!r}, {data_dir!r})")


def damaged_records(name: str, where: str, error: BaseException) -> DataError:
    """The one line for a record file array_record cannot read (truncated, bit-flipped)."""
    reason = (str(error).splitlines() or [type(error).__name__])[0][:100]
    return DataError(f"TFDS dataset {name!r} at {where}: a record file is damaged ({reason}); prepare the "
                     "dataset again (jaxviz.data.tfds.build_tfds_from_folder, or TFDS's download_and_prepare)")


def open_split(name: str, split: str, data_dir: str):
    """Opens the split of a prepared dataset for random access, images left encoded.

    Args:
      name: ``NAME[/CONFIG][:VERSION]`` (newest prepared version by default).
      split: a TFDS split expression (``train``, ``validation[:1000]``...).
      data_dir: the TFDS data dir.

    Returns:
      ``(records, channels)``: a sequence of example dicts whose ``image`` is the encoded bytes,
      and the channel count the ``image`` feature declares.

    Raises:
      DataError: not prepared, not array_record, no ``image`` feature, unknown or empty split.
    """
    path = _dataset_dir(name, data_dir)
    builder = tfds.builder_from_directory(path)
    features = builder.info.features
    feature = features["image"] if "image" in features.keys() else None
    if not isinstance(feature, tfds.features.Image):
        images = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
        raise DataError(f"TFDS dataset {name!r} has no image feature named 'image' "
                        f"(image features: {', '.join(images) or 'none'})")
    try:
        # Skip TFDS's decoding: jaxviz decodes with PIL, converts modes and crops itself.
        records = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
    except NotImplementedError:
        raise DataError(
            f"TFDS dataset {name!r} at {path} is stored as {builder.info.file_format.value}; reading "
            f"without TensorFlow needs array_record: prepare it again with "
            f"file_format='array_record' in another data dir") from None
    except RuntimeError as e:  # array_record's reader: a truncated or damaged record file
        raise damaged_records(name, path, e) from None
    except (KeyError, ValueError) as e:
        known = ", ".join(sorted(builder.info.splits.keys()))
        if all(re.sub(r"\[.*\]$", "", part) in builder.info.splits.keys() for part in split.split("+")):
            raise DataError(f"TFDS dataset {name!r}: bad split {split!r} ({e})") from None
        raise DataError(f"TFDS dataset {name!r} has no split {split!r} (splits: {known})") from None
    if len(records) == 0:
        raise DataError(f"TFDS dataset {name!r}: split {split!r} is empty")
    return records, feature.shape[-1]


@dataclasses.dataclass(frozen=True)
class BuiltDataset:
    """What :func:`build_tfds_from_folder` wrote: ``path`` is the dataset's version directory."""

    name: str
    split: str
    path: str
    images: int
    skipped: int
    converted: int


def _encoded(path: str, converted: bool) -> bytes:
    """The file's own bytes for RGB JPEG/PNG (lossless, no re-encoding), else an RGB PNG."""
    if not converted:
        with Image.open(path) as im:
            if im.format in ("JPEG", "PNG"):
                with open(path, "rb") as f:
                    return f.read()
    image, _ = read_image(path)
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def _builder_class(name: str, version: str, split: str, scan: FolderScan):
    class FolderImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)
        # No source file holds URL checksums; TFDS would otherwise look for one next to this
        # module through the optional importlib_resources package.
        code_path = None

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"Images of {scan.root} (jaxviz.data.build_tfds_from_folder).",
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "file": tfds.features.Text(),
                }),
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples()}

        def _generate_examples(self):
            for path in scan.files:
                rel = os.path.relpath(path, scan.root).replace(os.sep, "/")
                yield rel, {"image": _encoded(path, path in scan.converted), "file": rel}

    # The dataset name is the directory under data_dir; set after creation because TFDS
    # derives ``name`` from the class name when the class is defined.
    FolderImages.name = name
    return FolderImages


def build_tfds_from_folder(folder: str | os.PathLike, name: str, data_dir: str | os.PathLike, *,
                           split: str = "train", version: str = "1.0.0",
                           overwrite: bool = False) -> BuiltDataset:
    """Prepares the readable images under ``folder`` as an array_record TFDS dataset.

    Files are chosen as for ``folder:PATH`` (recursive, sorted, unreadable ones skipped); RGB
    JPEG/PNG files are stored as they are, others converted to RGB PNG. Works without TensorFlow.

    Args:
      folder: the image folder.
      name: dataset name, lower snake case (``my_photos``).
      data_dir: TFDS data dir; the dataset goes to ``data_dir/name/version``.
      split: the split the images form.
      version: ``MAJOR.MINOR.PATCH``.
      overwrite: replace an existing dataset of the same name and version.

    Returns:
      A :class:`BuiltDataset`.

    Raises:
      UsageError: bad name, split or version. DataError: empty folder, or the dataset exists.
    """
    if not _NAME.fullmatch(name):
        raise UsageError(f"bad dataset name {name!r}: use lower snake case, e.g. my_photos")
    if not _SPLIT.fullmatch(split):
        raise UsageError(f"bad split name {split!r}: use letters, digits and _")
    if not _VERSION.fullmatch(version):
        raise UsageError(f"bad version {version!r}: expected MAJOR.MINOR.PATCH, e.g. 1.0.0")
    root = resolve_data_dir(data_dir)
    target = os.path.join(root, name, version)
    scan = scan_folder(folder)
    if os.path.exists(target):
        if not overwrite:
            raise DataError(f"TFDS dataset {name} {version} already exists at {target} "
                            "(pass overwrite=True to replace it)")
        shutil.rmtree(target)
    builder = _builder_class(name, version, split, scan)(data_dir=root, file_format="array_record")
    # Nothing is downloaded, but TFDS wants a download dir: a temporary one keeps data_dir clean.
    with tempfile.TemporaryDirectory(prefix="jaxviz-tfds-") as tmp:
        builder.download_and_prepare(
            download_dir=tmp, download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return BuiltDataset(name, split, target, len(scan.files), len(scan.skipped), len(scan.converted))
