"""jingle: a Ray pipeline that trains a fusion model and a pointer network on codec latents.

The code lives in the repository's top-level folders (``core/``, ``datasets/``, ``models/``,
``training/``, ``evaluation/``, ``pipelines/``) and installs under this one namespace (``jingle.models``, ``jingle.datasets``,
...; setuptools' package mapping in ``pyproject.toml``), so that nothing named ``datasets`` or
``models`` lands at the top of site-packages, where Hugging Face's ``datasets`` lives.

Imported from a checkout (``ray job submit --working-dir .`` ships one, and the editable
install points here), the checkout's folders are this package's subpackages.
"""

from pathlib import Path as _Path

_CHECKOUT = _Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "pipelines" / "cli.py").is_file():
    __path__.append(str(_CHECKOUT))  # noqa: F821 - the package's own search path
