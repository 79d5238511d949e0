"""ADD [options] <source> <dest>."""

from __future__ import annotations

import glob
import os
import re
from typing import Final

from chutes.image.directive import BaseDirective, DirectiveType, check

CHECKSUM_RE: Final = re.compile(r"^sha(?:256|384|512):[a-f0-9]+$")
CHOWN_RE: Final = re.compile(r"^([a-z_][a-z0-9_-]{0,31}|\d+)(:([a-z_][a-z0-9_-]{0,31}|\d+))?$", re.I)
CHMOD_RE: Final = re.compile(r"^[0-7]{3}$")


class ADD(BaseDirective):
    """Files or a URL added to the image.

    URL sources (anything with `://`) may use `--keep-git-dir` and `--checksum`. Local sources are
    glob patterns (recursive), minus the `exclude` globs, limited to paths under `build_dir` (the
    working directory by default); the matches become the directive's build context, since only
    those files are uploaded for a remote build. No match is an error.
    """

    def __init__(
        self,
        source: str,
        dest: str,
        keep_git_dir: bool = False,
        checksum: str | None = None,
        chown: str | None = None,
        chmod: str | None = None,
        exclude: list[str] | None = None,
        build_dir: str | None = None,
    ) -> None:
        is_url = "://" in source
        options: list[str] = []
        if is_url:
            if keep_git_dir:
                options.append("--keep-git-dir=true")
            if checksum:
                check(bool(CHECKSUM_RE.match(checksum)), f"Invalid checksum option: {checksum}")
                options.append(f"--checksum={checksum}")
        if chown:
            check(bool(CHOWN_RE.match(chown)), f"Invalid chown option: {chown}")
            options.append(f"--chown={chown}")
        if chmod:
            check(bool(CHMOD_RE.match(chmod)), f"Invalid chmod option: {chmod}")
            options.append(f"--chmod={chmod}")

        context: list[str] = []
        if not is_url:
            matches = glob.glob(source, recursive=True)
            excluded = {path for pattern in exclude or [] for path in glob.glob(pattern, recursive=True)}
            root = os.path.abspath(build_dir or os.getcwd())
            context = [
                path
                for path in matches
                if path not in excluded and os.path.commonpath([root, os.path.abspath(path)]) == root
            ]
            check(bool(context), f"No (accessible) source paths matched provided pattern: {source}")
        super().__init__(DirectiveType.ADD, " ".join([*options, source, dest]), context)
