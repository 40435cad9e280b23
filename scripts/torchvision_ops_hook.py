"""Defines torchvision's C++ operator schemas before torchvision is first imported (vLLM CPU venv only).

PyPI's torchvision wheel is built against CUDA torch; beside ``torch==2.13.0+cpu`` its C++ library does not
load and ``import torchvision`` dies on ``operator torchvision::nms does not exist`` (its fake-tensor
registrations need the schemas). This hook, installed as ``_discovla_tv_hook.py`` plus a ``.pth`` line in
site-packages by ``scripts/setup_vllm_cpu.sh``, waits for the first ``import torchvision`` (so Python start-up
does not import torch), defines ``torchvision::nms`` and ``torchvision::qnms`` with ``torch.library``, then
lets the normal import proceed. The operators themselves stay unavailable; vLLM never calls them.
"""

import importlib.abc
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor",
)
_LIBRARY = []  # keeps the torch.library.Library alive


def _define_schemas() -> None:
    import torch

    for schema in _SCHEMAS:
        name = schema.split("(", 1)[0]
        try:
            torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
            continue  # torchvision's own C++ library is loaded: nothing to do
        except RuntimeError:
            pass
        if not _LIBRARY:
            _LIBRARY.append(torch.library.Library("torchvision", "FRAGMENT"))
        _LIBRARY[0].define(schema)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        _define_schemas()
        return None  # the regular finders import torchvision itself


def install() -> None:
    if "torchvision" not in sys.modules and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
