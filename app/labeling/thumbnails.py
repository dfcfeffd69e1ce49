"""Thumbnails for the image list, loaded lazily in the background.

The import stores a small PNG per image in the project database (it decodes every image anyway),
so a thumbnail costs one indexed read and a tiny decode, done in a background thread with its
own connection; images without one (e.g. imported by an older version) get one made from the
image file and stored. Requests come only from rows the list view is painting, newest first, so
scrolling through thousands of images never queues them all; finished ones stay in an in-memory
cache.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from core.data.images import read_image

from ..project.importer import make_thumbnail
from ..project.store import Store

MEMORY_CACHE = 1000   # decoded thumbnails (the list keeps its own scaled icons)


class ThumbnailLoader(QObject):
    ready = Signal(int)                      # image id whose thumbnail is now in the cache

    def __init__(self, project_folder, parent=None):
        super().__init__(parent)
        self._folder = project_folder
        self._cache: OrderedDict[int, QImage] = OrderedDict()
        self._queue: list[int] = []          # a stack: the latest request is served first
        self._queued: set[int] = set()
        self._lock = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="thumbnails", daemon=True)
        self._thread.start()

    def get(self, image_id: int) -> QImage | None:
        with self._lock:
            img = self._cache.get(image_id)
            if img is not None:
                return img
            if image_id not in self._queued:
                self._queued.add(image_id)
                self._queue.append(image_id)
                self._lock.notify()
        return None

    def invalidate(self, image_id: int) -> None:
        with self._lock:
            self._cache.pop(image_id, None)

    def close(self) -> None:
        with self._lock:
            self._stop = True
            self._lock.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        store = None
        try:
            store = Store.open(self._folder)
            while True:
                with self._lock:
                    while not self._queue and not self._stop:
                        self._lock.wait()
                    if self._stop:
                        return
                    image_id = self._queue.pop()
                    self._queued.discard(image_id)
                img = self._load(store, image_id)
                if img is not None:
                    with self._lock:
                        self._cache[image_id] = img
                        while len(self._cache) > MEMORY_CACHE:
                            self._cache.popitem(last=False)
                    self.ready.emit(image_id)
        finally:
            if store is not None:
                store.close()

    @staticmethod
    def _load(store: Store, image_id: int) -> QImage | None:
        try:
            png = store.thumbnail(image_id)
            if png is None:
                png = make_thumbnail(read_image(store.image(image_id).abs_path))
                store.set_thumbnail(image_id, png)
        except Exception:   # a missing or broken file: the list shows its name, the canvas says why
            return None
        img = QImage.fromData(png, "PNG")
        return None if img.isNull() else img
