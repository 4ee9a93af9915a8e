"""POSIX conformance probe: runs a fixed sequence of calls in a directory and prints
one JSON list of outcomes (values or errno names). tests/fs/posix_test.ts runs it on
a plain directory and on the same kind of directory through the loopback mount, as
root and as an unprivileged user, and requires identical output.

Usage: posix_ops.py DIR root|user
"""
import errno, json, os, stat, sys

d, phase = sys.argv[1], sys.argv[2]
os.chdir(d)
os.umask(0o022)
out = []


def rec(name, f):
    try:
        v = f()
    except OSError as e:
        v = "E:" + errno.errorcode.get(e.errno, str(e.errno))
    out.append([name, v])


def st(p, follow=False):
    s = os.stat(p) if follow else os.lstat(p)
    return {
        "type": stat.S_IFMT(s.st_mode), "mode": oct(stat.S_IMODE(s.st_mode)), "nlink": s.st_nlink,
        "uid": s.st_uid, "gid": s.st_gid,
        "size": s.st_size if not stat.S_ISDIR(s.st_mode) else None,
    }


def write(p, data, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode=0o644):
    fd = os.open(p, flags, mode)
    try:
        return os.write(fd, data)
    finally:
        os.close(fd)


def read(p):
    with open(p, "rb") as f:
        return f.read().decode()


if phase == "root":
    rec("create 0640", lambda: write("f", b"hello", mode=0o640))
    rec("stat f", lambda: st("f"))
    rec("excl exists", lambda: os.open("f", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    rec("open missing", lambda: os.open("missing", os.O_RDONLY))
    rec("path through file", lambda: os.stat("f/x"))
    rec("name too long", lambda: os.open("x" * 256, os.O_CREAT | os.O_WRONLY))
    rec("mkdir d", lambda: os.mkdir("d", 0o750))
    rec("stat d", lambda: st("d"))
    rec("mkdir exists", lambda: os.mkdir("d"))
    rec("mkdir d/sub", lambda: os.mkdir("d/sub"))
    rec("dir nlink grows", lambda: os.lstat("d").st_nlink)
    rec("rmdir nonempty", lambda: os.rmdir("d"))
    rec("rmdir file", lambda: os.rmdir("f"))
    rec("unlink dir", lambda: os.unlink("d"))
    rec("rename into own subdir", lambda: os.rename("d", "d/sub/x"))
    rec("mkdir e", lambda: os.mkdir("e"))
    rec("write e/g", lambda: write("e/g", b"1"))
    rec("rename dir over nonempty dir", lambda: os.rename("d", "e"))
    rec("rename file over dir", lambda: os.rename("f", "d"))
    rec("rename dir over file", lambda: os.rename("d", "f"))
    rec("link dir", lambda: os.link("d", "dlink"))
    rec("link f h", lambda: os.link("f", "h"))
    rec("nlink after link", lambda: (os.lstat("f").st_nlink, os.lstat("h").st_nlink))
    rec("same inode", lambda: os.lstat("f").st_ino == os.lstat("h").st_ino)
    rec("unlink h", lambda: os.unlink("h"))
    rec("nlink after unlink", lambda: os.lstat("f").st_nlink)
    rec("symlink", lambda: os.symlink("f", "s"))
    rec("readlink", lambda: os.readlink("s"))
    rec("readlink non-link", lambda: os.readlink("f"))
    rec("lstat link", lambda: st("s"))
    rec("stat through link", lambda: st("s", follow=True))
    rec("nofollow open", lambda: os.open("s", os.O_RDONLY | os.O_NOFOLLOW))
    rec("dangling", lambda: (os.symlink("nowhere", "dl"), os.path.lexists("dl"), os.path.exists("dl")))
    rec("loop", lambda: (os.symlink("loop", "loop"), os.stat("loop")))
    rec("truncate grow", lambda: (os.truncate("f", 100), os.lstat("f").st_size))
    rec("truncate shrink", lambda: (os.truncate("f", 3), read("f")))
    rec("pwrite past eof", lambda: write("p", b"x") and (lambda fd: (os.pwrite(fd, b"y", 10), os.close(fd), os.lstat("p").st_size))(os.open("p", os.O_WRONLY)))
    rec("read past eof", lambda: (lambda fd: (os.lseek(fd, 100, 0), os.read(fd, 10), os.close(fd)))(os.open("f", os.O_RDONLY))[1].decode())
    rec("append", lambda: (write("f", b"++", flags=os.O_WRONLY | os.O_APPEND), read("f")))
    rec("o_trunc", lambda: (write("p", b"z"), read("p")))
    rec("chmod", lambda: (os.chmod("f", 0o4755), oct(stat.S_IMODE(os.lstat("f").st_mode))))
    rec("chown", lambda: (os.chown("f", 1234, 5678), st("f")))
    rec("chown keeps link", lambda: (os.lchown("s", 4321, 8765), st("s"), st("f")))
    rec("utime ns", lambda: (os.utime("f", ns=(1_000_000_123, 2_000_000_456)),
                             os.lstat("f").st_atime_ns, os.lstat("f").st_mtime_ns))
    rec("write moves mtime", lambda: (write("f", b"new", flags=os.O_WRONLY), os.lstat("f").st_mtime_ns > 2_000_000_456))
    def ctime_moves():
        before = os.lstat("f").st_ctime_ns
        os.utime("f", ns=(5, 5))
        os.chmod("f", 0o600)
        return os.lstat("f").st_ctime_ns >= before
    rec("chmod moves ctime", ctime_moves)
    rec("mkfifo", lambda: (os.mkfifo("fifo", 0o600), st("fifo")))
    rec("xattr set/get/list", lambda: (os.setxattr("f", "user.k", b"v"), os.getxattr("f", "user.k"),
                                       sorted(os.listxattr("f"))) and [os.getxattr("f", "user.k").decode(), sorted(os.listxattr("f"))])
    rec("xattr create exists", lambda: os.setxattr("f", "user.k", b"w", os.XATTR_CREATE))
    rec("xattr replace missing", lambda: os.setxattr("f", "user.z", b"w", os.XATTR_REPLACE))
    rec("xattr missing", lambda: os.getxattr("f", "user.none"))
    rec("xattr remove", lambda: (os.removexattr("f", "user.k"), os.listxattr("f")))
    rec("rename over file", lambda: (write("r1", b"one"), write("r2", b"two"), os.rename("r1", "r2"), read("r2"), os.path.exists("r1")))
    rec("rename same file", lambda: (os.link("r2", "r3"), os.rename("r2", "r3"), sorted(x for x in os.listdir(".") if x.startswith("r"))))
    rec("listdir", lambda: sorted(os.listdir(".")))
    rec("listdir types", lambda: sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in os.scandir(".")))
    rec("fsync", lambda: (lambda fd: (os.fsync(fd), os.close(fd)))(os.open("f", os.O_RDONLY)) and None)
    rec("rmdir", lambda: (os.unlink("e/g"), os.rmdir("e"), os.path.exists("e")))
    def umask_zero():
        os.umask(0)
        try:
            write("u666", b"", mode=0o666)
            os.mkdir("u777", 0o777)
            os.mkfifo("ufifo", 0o666)
            return [st("u666"), st("u777"), st("ufifo")]
        finally:
            os.umask(0o022)
    rec("caller umask 0", umask_zero)
    # Leave a stage for the unprivileged phase.
    os.mkdir("shared", 0o1777); os.chmod("shared", 0o1777)
    write("secret", b"s", mode=0o600)
    write("shared/rootfile", b"r", mode=0o644)
    os.mkdir("rootdir", 0o755)
    write("readable", b"pub", mode=0o644)
else:
    rec("whoami", lambda: (os.getuid(), os.getgid()))
    rec("read secret", lambda: read("secret"))
    rec("access secret", lambda: os.access("secret", os.R_OK))
    rec("read readable", lambda: read("readable"))
    rec("write readable", lambda: write("readable", b"x", flags=os.O_WRONLY))
    rec("create in rootdir", lambda: write("rootdir/x", b"x"))
    rec("create in shared", lambda: (write("shared/mine", b"m", mode=0o600), st("shared/mine")))
    rec("mkdir in shared", lambda: (os.mkdir("shared/mydir"), st("shared/mydir")))
    rec("symlink in shared", lambda: (os.symlink("mine", "shared/ml"), st("shared/ml")))
    rec("chmod others", lambda: os.chmod("readable", 0o777))
    rec("chown to root", lambda: os.chown("shared/mine", 0, 0))
    rec("chmod mine", lambda: (os.chmod("shared/mine", 0o640), st("shared/mine")))
    rec("sticky unlink others", lambda: os.unlink("shared/rootfile"))
    rec("sticky rename others", lambda: os.rename("shared/rootfile", "shared/stolen"))
    rec("unlink mine", lambda: (os.unlink("shared/mine"), os.path.exists("shared/mine")))
    rec("utime others", lambda: os.utime("readable", ns=(1, 1)))
    rec("utime now others", lambda: os.utime("readable"))
    rec("truncate others", lambda: os.truncate("readable", 0))
    rec("rmdir rootdir", lambda: os.rmdir("rootdir"))
    rec("listdir", lambda: sorted(os.listdir(".")))
    rec("listdir shared", lambda: sorted(os.listdir("shared")))

print("\n".join(json.dumps(r, default=str) for r in out))
