"""The flags of a command that reads a checkpoint's saved dataset settings (evaluation, export): where its files
are now, for when they moved since training. Everything else comes from the checkpoint."""
from __future__ import annotations

import argparse

from person.data.records import DatasetOptions


def add_moved_files(parser: argparse.ArgumentParser) -> None:
    """--data, --image-root and --embedding_path, each None unless given."""
    group = parser.add_argument_group("files moved since training (default: where the checkpoint says)")
    group.add_argument("--data", default=None, help="the dataset JSON, if it moved since training")
    group.add_argument("--image-root", "--image_root", dest="image_root", default=None, help="its images, if moved")
    group.add_argument("--embedding_path", "--embedding-path", dest="embedding_path", default=None,
                      help="the feature store, if moved")


def moved_files(args: argparse.Namespace) -> tuple[DatasetOptions, str | None]:
    """(the dataset options that override the checkpoint's, the feature store's new path or None) from the flags
    `add_moved_files` added."""
    return DatasetOptions(data=args.data, image_root=args.image_root), args.embedding_path
