"""Project templates for ``wasmgate new <template> <name>``.

A template is a directory under ``bindings/templates/`` holding ``template.toml``
(``description``, ``language``) and the files of a ready-to-build project: a handler, a
``wasmgate.toml`` whose build command suits the language, and a sample ``event.json``.
``{{name}}`` in file contents and file names becomes the project name. Nothing here is
Python-specific, so a JavaScript template (``js-http``, built with ``jco componentize``) is
one more directory. A file called ``gitignore`` is written as ``.gitignore`` (dot files are
easy to lose in packaging).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import msgspec

from bindings import TEMPLATES_DIR
from gateway.errors import ConfigError

PLACEHOLDER = "{{name}}"
# The name becomes a directory, a component name, a TOML table key and an HTTP route.
_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_SKIP = {"template.toml", "__pycache__"}


class _TemplateInfo(msgspec.Struct, forbid_unknown_fields=True):
    description: str
    language: str


@dataclass(frozen=True)
class ProjectTemplate:
    """One template: its name (the directory), a one-line description and its language."""

    name: str
    description: str
    language: str
    root: Path


def list_templates(root: Path = TEMPLATES_DIR) -> list[ProjectTemplate]:
    """Return every template under ``root``, sorted by name."""
    found = []
    for info_path in sorted(root.glob("*/template.toml")):
        try:
            info = msgspec.convert(tomllib.loads(info_path.read_text()), _TemplateInfo)
        except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
            raise ConfigError(f"broken template description: {exc}", path=str(info_path)) from exc
        found.append(ProjectTemplate(info_path.parent.name, info.description, info.language,
                                     info_path.parent))
    return found


def create_project(template: str, name: str, dest: Path,
                   root: Path = TEMPLATES_DIR) -> list[Path]:
    """Copy ``template`` into ``dest`` with ``{{name}}`` replaced; return the files written.

    Raises :class:`ConfigError` for an unknown template, a name that cannot be a component
    name, or a ``dest`` that already has files in it (nothing is overwritten).
    """
    templates = {t.name: t for t in list_templates(root)}
    if template not in templates:
        known = ", ".join(templates) or "none"
        raise ConfigError(f"unknown template {template!r}; available: {known} "
                          "(`wasmgate new` lists them)")
    if not _NAME.fullmatch(name):
        raise ConfigError(f"invalid project name {name!r}: use lowercase letters, digits and "
                          "dashes, starting with a letter (it becomes the component name and "
                          "the HTTP route)")
    if dest.exists() and any(dest.iterdir()):
        raise ConfigError(f"{dest} already exists and is not empty; pick another name or "
                          "remove it")
    source = templates[template].root
    written = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir() or _SKIP & set(relative.parts):
            continue
        target = dest / str(relative).replace(PLACEHOLDER, name)
        if target.name == "gitignore":
            target = target.with_name(".gitignore")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text().replace(PLACEHOLDER, name))
        written.append(target)
    return written


__all__ = ["PLACEHOLDER", "ProjectTemplate", "create_project", "list_templates"]
