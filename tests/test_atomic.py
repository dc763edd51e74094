"""gpcis.atomic: all-or-nothing writes with the permissions of an ordinary open()."""

from __future__ import annotations

import os
import stat

import pytest

from gpcis.atomic import atomic_open, atomic_write_bytes, atomic_write_text

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_file_gets_the_umask_mode_not_mkstemps_0600(tmp_path, umask_027):
    path = atomic_write_text(tmp_path / "sub" / "a.json", "{}\n")
    assert path.read_text() == "{}\n"
    assert _mode(path) == 0o640  # 0o666 & ~0o027, as open(path, "w") gives
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert _mode(path) == _mode(plain)


def test_a_replaced_file_keeps_its_mode(tmp_path, umask_027):
    path = tmp_path / "b.bin"
    path.write_bytes(b"old")
    os.chmod(path, 0o604)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and _mode(path) == 0o604


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_bytes(tmp_path / "c.bin", b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(path) as fh:
            fh.write(b"half")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["c.bin"]


def test_checkpoints_are_readable_like_other_files(tmp_path, umask_027):
    from gpcis.models import create_model
    from gpcis.models.checkpoint import save_checkpoint

    path = save_checkpoint(tmp_path / "m.pt", create_model("ritm_tiny"))
    assert _mode(path) == 0o640
