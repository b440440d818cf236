"""Owner-only files that never follow a planted symlink (src/protocol/privateFile.ts): the run directory
is 0700, every file in it 0600, opened with O_NOFOLLOW; replacements are atomic renames."""
import os
import secrets

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def open_private(path, how):
    """A descriptor for writing `path` owner-only: how = 'append' | 'truncate' | 'create' (O_EXCL)."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | {"append": os.O_APPEND, "truncate": os.O_TRUNC, "create": os.O_EXCL}[how]
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    if how != "create":
        os.fchmod(fd, PRIVATE_FILE_MODE)
    return fd


def write_private_atomic(path, text, durable=False):
    """Writes a fresh owner-only file and renames it over `path` (a planted link there is replaced, its
    target neither written nor chmodded)."""
    tmp = f"{path}.{os.getpid()}.{secrets.token_hex(3)}.tmp"
    fd = open_private(tmp, "create")
    try:
        os.write(fd, text.encode("utf-8"))
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_dir(os.path.dirname(path))


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def ensure_private_dir(path):
    os.makedirs(path, mode=PRIVATE_DIR_MODE, exist_ok=True)
    if os.path.islink(path):
        raise RuntimeError(f"{path} is a symbolic link; a run directory must be a real directory")
    if not os.path.isdir(path):
        raise RuntimeError(f"{path} is not a directory")
    if os.stat(path).st_mode & 0o777 != PRIVATE_DIR_MODE:
        os.chmod(path, PRIVATE_DIR_MODE)
