"""`make deb`: what the package holds, that lintian accepts it, and that the tree stays clean."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, need_tool

pytestmark = [pytest.mark.slow, pytest.mark.integration]

DEPENDS = (
    "python3-uvloop", "python3-construct", "python3-prometheus-client", "python3-yaml",
    "python3-dpkt",
)


def _files(deb: Path) -> set[str]:
    listing = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True, timeout=60
    ).stdout
    names = subprocess.run(
        ["tar", "-t"], input=listing, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    return {n.removeprefix(".") for n in names.split()}


def test_package_holds_program_unit_conffile_man_page_dashboard_and_alerts(
    built_deb: Path,
) -> None:
    files = _files(built_deb)
    for path in (
        "/usr/bin/l2tpreorder",
        "/lib/systemd/system/l2tpreorder.service",
        "/etc/l2tpreorder/config.yaml",
        "/usr/share/man/man8/l2tpreorder.8.gz",
        "/usr/share/man/man5/l2tpreorder.yaml.5.gz",
        "/usr/share/doc/l2tpreorder/README.md",
        "/usr/share/doc/l2tpreorder/NEWS.md",
        "/usr/share/doc/l2tpreorder/docs/inpath.md",
        "/usr/share/l2tpreorder/grafana/l2tpreorder.json",
        "/usr/share/l2tpreorder/prometheus/alerts.yml",
        "/usr/lib/python3/dist-packages/l2tpreorder/core/engine.py",
    ):
        assert path in files, path
    # Every unit in systemd/ is packaged.
    for unit in (PROJECT_ROOT / "systemd").glob("*.service"):
        assert f"/lib/systemd/system/{unit.name}" in files
    conffiles = subprocess.run(
        ["dpkg-deb", "-I", str(built_deb), "conffiles"], capture_output=True, text=True,
        check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert conffiles == ["/etc/l2tpreorder/config.yaml"]
    depends = subprocess.run(
        ["dpkg-deb", "-f", str(built_deb), "Depends"], capture_output=True, text=True,
        check=True, timeout=60,
    ).stdout  # fmt: skip
    names = {d.strip().split()[0] for d in depends.split(",")}
    assert set(DEPENDS) <= names, depends


def test_packaged_unit_runs_the_packaged_program(built_deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-x", str(built_deb), str(tmp_path)], check=True, timeout=60)
    unit = (tmp_path / "lib/systemd/system/l2tpreorder.service").read_text()
    assert "ExecStart=/usr/bin/l2tpreorder run --config /etc/l2tpreorder/config.yaml" in unit
    assert "ExecReload=/usr/bin/l2tpreorder reload --config /etc/l2tpreorder/config.yaml" in unit
    assert "/usr/local/bin" not in unit
    inpath = (tmp_path / "lib/systemd/system/l2tpreorder-inpath.service").read_text()
    assert "ExecStart=/usr/bin/l2tpreorder run --config /etc/l2tpreorder/config.yaml" in inpath
    assert "/usr/local/bin" not in inpath
    # Every unit's Documentation= works where the package puts things: its man pages and files.
    for unit in (tmp_path / "lib/systemd/system").glob("*.service"):
        docs = " ".join(re.findall(r"^Documentation=(.*)$", unit.read_text(), re.M)).split()
        assert "man:l2tpreorder(8)" in docs and "man:l2tpreorder.yaml(5)" in docs, unit
        for doc in docs:
            if doc.startswith("man:"):
                match = re.fullmatch(r"man:(\S+)\((\d)\)", doc)
                assert match, f"{unit.name}: Documentation={doc}"
                name, section = match.groups()
                page = tmp_path / f"usr/share/man/man{section}/{name}.{section}.gz"
            else:
                page = tmp_path / doc.removeprefix("file:///")
            assert page.exists(), f"{unit.name}: Documentation={doc}: no {page}"


def test_readme_and_docs_links_work_where_the_package_installs_them(
    built_deb: Path, tmp_path: Path
) -> None:
    """README.md and docs/ keep their layout under /usr/share/doc/l2tpreorder (uncompressed),
    so each relative link in them reaches a file the package holds."""
    subprocess.run(["dpkg-deb", "-x", str(built_deb), str(tmp_path)], check=True, timeout=60)
    doc = tmp_path / "usr/share/doc/l2tpreorder"
    pages = [doc / "README.md", *sorted((doc / "docs").glob("*.md"))]
    assert len(pages) >= 10, pages
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(doc)} -> {target}")
    assert broken == []


def test_lintian_accepts_the_package(built_deb: Path) -> None:
    lintian = need_tool("lintian")
    res = subprocess.run(
        [lintian, "--fail-on", "error", "--no-tag-display-limit", str(built_deb)],
        capture_output=True, text=True, timeout=600,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert not [line for line in res.stdout.splitlines() if line.startswith("E:")], res.stdout


def test_make_deb_leaves_the_source_tree_clean(built_deb: Path) -> None:
    """The build ran in a temporary copy: nothing it writes (debian/files, .pybuild, build/)
    appears in the tree, and the package went to DEB_OUT, not here."""
    left = [
        name
        for name in ("debian/files", "debian/l2tpreorder", "debian/.debhelper", ".pybuild",
                     "debian/debhelper-build-stamp", "debian/l2tpreorder.substvars",
                     "debian/pyproject.toml.upstream")
        if (PROJECT_ROOT / name).exists()
    ]  # fmt: skip
    assert left == [], left
    assert built_deb.parent != PROJECT_ROOT
