"""Destinations that write folders (``files``, ``ad_audience``): each delivery is a
folder ``<root>/<segment>/<as-of>/`` with ``manifest.json`` (counts, SHA-256 of every
file), written in a temporary folder that is then renamed into place, so a reader
sees the previous folder or the complete new one, never a partial one.

A process killed while writing a folder leaves hidden ``.<as-of>.tmp-*`` (and, during
the swap, ``.<as-of>.old-*``) folders of member files beside it;
:func:`remove_leftovers` deletes them when the next export starts.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TypeVar

from cdp.errors import DeliveryError
from cdp.processing.activation.destinations.base import (
    Confirm,
    Context,
    Deliverer,
    Delivery,
    ids,
)
from cdp.storage.disk import storage_errors

# Hidden folders a file destination's delivery writes beside ``<segment>/<as-of>``:
# the next folder while it is written, and the previous one while it is swapped out.
_STAGING_PREFIX = ".{name}.tmp-"
_RETIRED_PREFIX = ".{name}.old-"
_LEFTOVER = re.compile(r"^\.\d{4}-\d{2}-\d{2}\.(tmp|old)-[A-Za-z0-9_]+$")


class _FolderConfig(Protocol):
    @property
    def path(self) -> Path: ...


FolderConfigT = TypeVar("FolderConfigT", bound=_FolderConfig)


class FolderDeliverer(Deliverer[FolderConfigT]):
    """A destination type whose configuration has a ``path`` and that delivers a
    folder of files per segment and as-of; subclasses say what the files are."""

    @abstractmethod
    def prepare(self, delivery: Delivery, context: Context) -> Callable[[Path], None]:
        """Compute the files' contents; return what writes them into a folder."""

    def deliver(self, delivery: Delivery, confirm: Confirm, context: Context) -> str:
        write = self.prepare(delivery, context)
        target = self.folder_root(context.out_dir) / delivery.segment / delivery.as_of.isoformat()
        publish_folder(target, delivery, write)
        confirm(ids(delivery.entered), ids(delivery.exited))
        return str(target)

    def folder_root(self, out_dir: Path) -> Path:
        path = self.config.path
        return path if path.is_absolute() else out_dir / path


def remove_leftovers(roots: Iterable[Path]) -> list[Path]:
    """Delete the hidden folders a killed delivery left under ``roots``; return them.

    Any segment's folder is searched, including those of segments no longer configured."""
    removed = []
    for root in sorted(set(roots)):
        if not root.is_dir():
            continue
        for segment in sorted(p for p in root.iterdir() if p.is_dir()):
            for leftover in sorted(segment.iterdir()):
                if _LEFTOVER.match(leftover.name) and leftover.is_dir():
                    shutil.rmtree(leftover)
                    removed.append(leftover)
    return removed


def publish_folder(target: Path, delivery: Delivery, write: Callable[[Path], None]) -> None:
    """Write into a temporary sibling folder, add the manifest, then rename into place:
    a reader sees the previous folder or the complete new one, never a partial one.

    A full disk (or an I/O error) is a :class:`~cdp.errors.DiskError` naming
    ``target``, any other failure to write it (no permission, a file in the way) a
    :class:`~cdp.errors.DeliveryError`; the temporary folder is deleted and the
    previous folder stays."""
    try:
        with storage_errors(target):
            _write_folder(target, delivery, write)
    except OSError as exc:  # not a full disk or an I/O error: those are DiskError now
        raise DeliveryError(
            f"{target}: cannot write the folder ({type(exc).__name__}: {exc})"
        ) from exc


def _write_folder(target: Path, delivery: Delivery, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=_STAGING_PREFIX.format(name=target.name), dir=target.parent)
    )
    try:
        write(staging)
        files = {}
        for path in sorted(staging.iterdir()):
            files[path.name] = {
                "bytes": path.stat().st_size,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        manifest = {
            "export_run_id": delivery.export_run_id,
            "destination": delivery.destination,
            "segment": delivery.segment,
            "as_of": delivery.as_of.isoformat(),
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "counts": {
                "members": delivery.members.num_rows,
                "entered": delivery.entered.num_rows,
                "exited": delivery.exited.num_rows,
            },
            "files": files,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            retired = target.with_name(
                _RETIRED_PREFIX.format(name=target.name) + uuid.uuid4().hex[:8]
            )
            target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
