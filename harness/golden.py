"""Golden images: the reference's images kept on disk, so each is rendered once and then read.

A golden image is keyed by what decides its pixels: the weights (a hash of their files, not their path), the
renderer (a hash of its source and of harness/images.py, which sizes an edit's input, and the versions of the
libraries it draws with, so a fix or an upgrade renders anew), the reference's options (dtype, the kind of
device, max_sequence_length) and every field of the request (an input image by its pixels' digest). Which GPU
drew it is not keyed: a store rendered on one GPU serves a remote target on another, within the dtype's stated
tolerance. The store also maps the SPEC's weights option to their hash (weights.json), so a store rendered on
a machine with the weights serves a machine without them, where the target under test is remote.

<store>/<key>.json          the key's fields, the request, the render's info and timings (written last)
<store>/<key>-<i>.png       image i, lossless
<store>/weights.json        "preset=tiny-dev" or "model=/models/FLUX.1-dev" -> the weights' hash
<store>/digests.json        each weights file's sha256 by (path, size, mtime_ns): a 30 GB model is read once
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from harness import environment, images
from harness.cache import cache_dir
from harness.isolated import Isolated
from harness.target import Target, get_target_class, make_target, parse_spec
from harness.types import GenerationRequest, GenerationResult

WEIGHTS = ("preset", "model")             # the options that say where the weights are
NOT_IN_KEY = (*WEIGHTS, "max_queue")      # options that do not change a pixel (the weights are in as their hash)
LIBRARIES = ("torch", "diffusers", "transformers", "tokenizers", "safetensors", "pillow")  # what the renderer
                                                                                          # draws and resizes with


def default_store() -> Path:
    """$FLUXGATE_GOLDEN, else $FLUXGATE_CACHE/golden (the cache the presets use, ~/.cache/fluxgate by default)."""
    if os.environ.get("FLUXGATE_GOLDEN"):
        return Path(os.environ["FLUXGATE_GOLDEN"])
    return cache_dir() / "golden"


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of one (a crash, or two runs sharing a store)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def request_fields(request: GenerationRequest) -> dict[str, Any]:
    """Every field of the request, an input image as its digest (its pixels, however they were given); without
    one, image_fit means nothing and is left out."""
    fields = dataclasses.asdict(dataclasses.replace(request, image=None))
    if request.image is None:
        return {k: v for k, v in fields.items() if k not in ("image", "image_fit")}
    return {**fields, "image": images.digest(request.image)}


def key_of(fields: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(fields)).hexdigest()


def renderer_identity(name: str) -> dict[str, Any]:
    """The source of the target class's package and of its bases (which hold the seeding and rounding), and
    the versions of the libraries its encoders and VAE come from."""
    cls = get_target_class(name)
    files = set(Path(inspect.getfile(cls)).parent.glob("*.py"))
    files |= {Path(inspect.getfile(c)) for c in cls.__mro__[1:] if issubclass(c, Target) and c is not Target}
    files.add(Path(images.__file__))  # what an edit's input is resized to, and how
    code = hashlib.sha256()
    for file in sorted(files):
        code.update(canonical([file.name, hashlib.sha256(file.read_bytes()).hexdigest()]))
    return {"code": code.hexdigest(), "libraries": {lib: environment.version(lib) for lib in LIBRARIES}}


def weights_hash(root: Path, memo_path: Path) -> str:
    """sha256 over the sorted relative paths of every file under root and their contents' sha256s; each file's
    digest is memoised by (path, size, mtime_ns) in memo_path, so only new or changed files are read. Hidden
    files are left out: a download tool's .cache/ metadata changes when the weights do not."""
    memo, combined = read_json(memo_path), hashlib.sha256()
    files = (p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                       p.relative_to(root).parts))
    for file in sorted(files):
        stat, name = file.stat(), str(file.resolve())
        entry = memo.get(name)
        if entry is None or (entry["size"], entry["mtime_ns"]) != (stat.st_size, stat.st_mtime_ns):
            digest = hashlib.sha256()
            with file.open("rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
            entry = memo[name] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}
        combined.update(canonical([file.relative_to(root).as_posix(), entry["sha256"]]))
    write_atomic(memo_path, canonical(memo))
    return combined.hexdigest()


class Oracle:
    """`Oracle(target.reference_spec(), store).generate(request)`: the reference's images, from the store or
    rendered in a process of its own (an Isolated target, started on the first miss) and then stored."""

    def __init__(self, reference_spec: str, store: Path | None = None):
        self.spec, self.store = reference_spec, Path(store or default_store())
        self.name, self.options = parse_spec(reference_spec)
        weights = [f"{k}={self.options[k]}" for k in WEIGHTS if k in self.options]
        if len(weights) != 1:
            raise ValueError(f"reference spec {reference_spec!r}: must name its weights with one of preset=... "
                             "or model=..., which golden images are filed under")
        self.weights = weights[0]
        self.renderer: Isolated | None = None   # started on the first miss
        self.hits = self.renders = 0
        self.why_not_here: str | None = None    # why the weights cannot be read here, if they cannot
        self._hash: str | None = None
        self._identity: dict[str, Any] | None = None
        self.lock = threading.Lock()

    def weights_hash(self) -> str:
        """The weights' hash: from their files where they are here (and noted in weights.json), else from
        weights.json (a store made on another machine)."""
        if self._hash is None:
            index_path = self.store / "weights.json"
            index = read_json(index_path)
            try:
                path = make_target(self.spec).path  # constructed, not started: nothing is loaded
            except (FileNotFoundError, ValueError) as error:
                self.why_not_here = f"{type(error).__name__}: {error}"
                if self.weights not in index:
                    raise LookupError(f"{self.weights}: the weights are not here ({self.why_not_here}) and "
                                      f"{index_path} has no hash for them") from None
                self._hash = index[self.weights]
            else:
                self.store.mkdir(parents=True, exist_ok=True)
                self._hash = weights_hash(path, self.store / "digests.json")
                if index.get(self.weights) != self._hash:
                    write_atomic(index_path, canonical({**read_json(index_path), self.weights: self._hash}))
        return self._hash

    def key(self, request: GenerationRequest) -> str:
        return key_of(self.key_fields(request))

    def key_fields(self, request: GenerationRequest) -> dict[str, Any]:
        if request.seed is None:
            raise ValueError("seed=None: a request without a seed has a random image, so no golden image")
        given = {**self.defaults(), **self.options}  # "device=cpu" and no device at all draw alike
        options = {k: v for k, v in given.items() if k not in NOT_IN_KEY}
        if "device" in options:  # cuda:1 draws what cuda:0 draws
            options["device"] = options["device"].split(":")[0]
        if self._identity is None:
            self._identity = renderer_identity(self.name)
        return {"target": self.name, "weights": self.weights_hash(), "renderer": self._identity,
                "options": options, "request": request_fields(request)}

    def defaults(self) -> dict[str, str]:
        """The reference's options as the SPEC would give them when it leaves them out."""
        params = inspect.signature(get_target_class(self.name)).parameters.values()
        return {p.name: str(p.default) for p in params if p.default not in (inspect.Parameter.empty, None)}

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """The reference's images for the request; info["golden"] is "hit" or "rendered", info["golden_key"]
        the key. ValueError for a request without a seed; LookupError for a miss where nothing can render."""
        with self.lock:
            fields = self.key_fields(request)
            key = key_of(fields)
            record = read_json(self.store / f"{key}.json")
            if record:
                self.hits += 1
                images = np.stack([np.asarray(Image.open(self.store / f"{key}-{i}.png").convert("RGB"))
                                   for i in range(record["images"])])
                return GenerationResult(images, dict(record["timings"]),
                                        {**record["info"], "golden": "hit", "golden_key": key})
            if self.why_not_here is not None:
                raise LookupError(f"no golden image for {fields} in {self.store}, and the weights are not here "
                                  f"to render one ({self.why_not_here})")
            if self.renderer is None:
                self.renderer = Isolated(self.spec)
                self.renderer.start()
            result = self.renderer.generate(request)
            self.save(key, fields, result)
            self.renders += 1
            result.info.update(golden="rendered", golden_key=key)
            return result

    def save(self, key: str, fields: dict[str, Any], result: GenerationResult) -> None:
        for i, image in enumerate(result.images):
            png = io.BytesIO()
            Image.fromarray(image).save(png, format="PNG")
            write_atomic(self.store / f"{key}-{i}.png", png.getvalue())
        record = {"key": key, **fields, "images": len(result.images), "info": result.info, "timings": result.timings}
        write_atomic(self.store / f"{key}.json", json.dumps(record, indent=1, default=str).encode())  # last: complete

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "store": str(self.store), "hits": self.hits, "renders": self.renders}

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None

    def __enter__(self) -> Oracle:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
