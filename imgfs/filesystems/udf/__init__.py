"""UDF (ECMA-167 / OSTA UDF 1.02 to 2.60), read lazily one directory at a time."""

from imgfs.filesystems.udf.reader import UdfFilesystem

__all__ = ["UdfFilesystem"]
