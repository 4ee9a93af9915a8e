/**
 * The loopback filesystem under real tools, on real FUSE mounts (needs root).
 * Each test mirrors a directory through `outrun debug loopback` and checks what
 * the tools see and what lands in the underlying directory.
 */
import { removeTree } from "../remove_tree.ts";
import assert from "node:assert/strict";
import { fsTest, shOk } from "./loopback_helper.ts";

/** Name, type, mode, owner, size, link count and mtime of everything below `dir`. */
const TREE_LISTING = (dir: string) =>
  `cd '${dir}' && find . -printf '%p %y %m %U:%G %s %n %T@ %l\\n' | sort`;

fsTest("ls -la and stat show what the source has", async ({ src, mnt }) => {
  // Made through the mount: the kernel's attribute cache then has nothing stale to show.
  await shOk(`cd '${mnt}' && echo hi > f && mkdir d && ln -s f l && chmod 640 f &&
      touch -d '2001-02-03 04:05:06.789' f && chown 1234:5678 d`);
  const listing = (dir: string) => shOk(`ls -la --time-style=full-iso '${dir}' | tail -n +2`);
  assert.equal(
    (await listing(mnt)).replace(/^.* \.\.$/m, ""),
    (await listing(src)).replace(/^.* \.\.$/m, ""),
  );
  assert.equal(await shOk(TREE_LISTING(mnt)), await shOk(TREE_LISTING(src)));
  assert.equal(
    await shOk(`stat -c '%s %a %y' '${mnt}/f'`),
    "3 640 2001-02-03 04:05:06.789000000 +0000\n",
  );
});

fsTest("cp -a a tree in and back out is byte- and metadata-identical", async ({ mnt }) => {
  const work = await Deno.makeTempDir();
  try {
    await shOk(
      `mkdir -p '${work}/orig' && cp -a /usr/share/doc/bash /etc/ssh /usr/share/perl5 '${work}/orig/' 2>/dev/null || true
        cd '${work}/orig' && ln -s ssh sshlink && ln bash/copyright hardlink && mkfifo pipe &&
        dd if=/dev/urandom of=big bs=1M count=8 status=none`,
    );
    await shOk(`cp -a '${work}/orig' '${mnt}/copy' && cp -a '${mnt}/copy' '${work}/back'`);
    // diff cannot compare fifos; the listing below covers them.
    await shOk(`diff -r --no-dereference --exclude=pipe '${work}/orig' '${work}/back'`);
    assert.equal(
      await shOk(TREE_LISTING(`${work}/back`)),
      await shOk(TREE_LISTING(`${work}/orig`)),
    );
    assert.equal(
      await shOk(`stat -c %h '${mnt}/copy/hardlink'`),
      "2\n",
      "cp -a kept the hard link",
    );
  } finally {
    await removeTree(work);
  }
});

fsTest("find | wc and tar over a system tree match the original", async ({ mnt }) => {
  const count = (dir: string) => shOk(`cd '${dir}' && find . | wc -l`);
  assert.equal(await count(mnt), await count("/usr/share/perl5"));
  const tarList = (dir: string) =>
    shOk(`tar -C '${dir}' -cf - . | tar -tvf - --numeric-owner | sort`);
  assert.equal(await tarList(mnt), await tarList("/usr/share/perl5"));
  const sums = (dir: string) =>
    shOk(`cd '${dir}' && find . -type f -print0 | sort -z | xargs -0 md5sum`);
  assert.equal(await sums(mnt), await sums("/usr/share/perl5"));
}, { src: "/usr/share/perl5" });

fsTest("git init, add, commit, status inside the mount", async ({ mnt, src }) => {
  const out = await shOk(`cd '${mnt}' && git init -q repo && cd repo &&
      git config user.email t@example.invalid && git config user.name t &&
      for i in $(seq 1 50); do echo "line $i" > "file$i.txt"; done && mkdir sub && echo x > sub/y &&
      git add -A && git commit -qm first && echo change >> file7.txt && git mv file8.txt moved.txt &&
      git status --porcelain && git log --oneline | wc -l && git fsck --strict 2>&1 | tail -1`);
  assert.match(out, /^ M file7.txt$/m);
  assert.match(out, /^R {2}file8\.txt -> moved\.txt$/m);
  assert.match(out, /^1$/m);
  // The underlying directory is a valid repository too.
  assert.match(await shOk(`git -C '${src}/repo' status --porcelain`), /M file7.txt/);
});

fsTest("python3 compiles .pyc files that land in the source", async ({ mnt, src }) => {
  await shOk(`mkdir '${mnt}/pkg' && printf 'def f():\\n    return 42\\n' > '${mnt}/pkg/m.py' &&
      /usr/bin/python3 -m compileall -q '${mnt}/pkg' &&
      cd '${mnt}' && /usr/bin/python3 -c 'import pkg.m; assert pkg.m.f() == 42'`);
  const pyc = await shOk(`ls '${src}/pkg/__pycache__'`);
  assert.match(pyc, /^m\.cpython-\d+\.pyc$/m);
});

fsTest("chroot into a mirror of / runs /bin/ls", async ({ mnt }) => {
  const out = await shOk(`unshare --mount --propagation private bash -c '
      mount --rbind /proc "${mnt}/proc" && mount --rbind /dev "${mnt}/dev" &&
      chroot "${mnt}" /bin/ls /usr/bin/ls /etc/os-release && chroot "${mnt}" /bin/sh -c "echo \\$((6*7))"'`);
  assert.equal(out, "/etc/os-release\n/usr/bin/ls\n42\n");
}, { src: "/" });

fsTest("mmap reads and writes reach the file", async ({ mnt, src }) => {
  await shOk(`/usr/bin/python3 - '${mnt}/m' <<'EOF'
import mmap, os, sys
p = sys.argv[1]
with open(p, "wb") as f:
    f.write(b"a" * 8192)
with open(p, "r+b") as f:
    m = mmap.mmap(f.fileno(), 0)
    assert m[:4] == b"aaaa"
    m[100:105] = b"hello"
    m.flush()
    m.close()
EOF`);
  const data = await Deno.readFile(`${src}/m`);
  assert.equal(new TextDecoder().decode(data.subarray(100, 105)), "hello");
  assert.equal(data.length, 8192);
});

fsTest("rename over an existing file, hard links, symlinks", async ({ mnt, src }) => {
  const out = await shOk(`cd '${mnt}' && echo old > a && echo new > b && mv b a && cat a &&
      test ! -e b && echo gone &&
      ln a h && stat -c '%h' a && test "$(stat -c %i a)" = "$(stat -c %i h)" && echo same-inode &&
      echo more >> h && cat a &&
      ln -s a s && readlink s && cat s && ln -s /nonexistent dangling && readlink dangling &&
      mkdir -p d1/d2 && echo deep > d1/d2/f && mv d1 d3 && cat d3/d2/f &&
      rm h && stat -c %h a`);
  assert.equal(
    out,
    "new\ngone\n2\nsame-inode\nnew\nmore\na\nnew\nmore\n/nonexistent\ndeep\n1\n",
  );
  assert.equal(await Deno.readTextFile(`${src}/d3/d2/f`), "deep\n");
});

fsTest("fifos and device nodes are created in the source", async ({ mnt, src }) => {
  const out = await shOk(`cd '${mnt}' && mkfifo p && (echo through-fifo > p &) && cat p &&
      mknod n c 1 3 && stat -c '%F %t:%T' n p && (echo x > n || echo nodev)`);
  // The mount is nodev: the node exists, but opening it through the mirror is refused.
  assert.equal(out, "through-fifo\ncharacter special file 1:3\nfifo 0:0\nnodev\n");
  assert.equal(await shOk(`stat -c %F '${src}/p'`), "fifo\n");
});

fsTest("extended attributes", async ({ mnt, src }) => {
  const out = await shOk(`cd '${mnt}' && touch f && setfattr -n user.colour -v blue f &&
      setfattr -n user.empty f && getfattr --absolute-names -d f &&
      setfattr -x user.colour f && getfattr --absolute-names -d -m - f | grep -c user. ;
      getfattr -n user.missing f 2>&1 || true`);
  assert.match(out, /user\.colour="blue"/);
  assert.match(out, /user\.empty/);
  assert.match(out, /No such attribute/);
  assert.doesNotMatch(await shOk(`getfattr -d '${src}/f'`), /colour/);
});

fsTest("sparse files answer SEEK_DATA and SEEK_HOLE like the source", async ({ mnt, src }) => {
  const probe = (p: string) =>
    shOk(`/usr/bin/python3 - '${p}' <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
out = []
for off in (0, 4096, 1 << 20, (1 << 20) + 10, 3 << 20):
    for whence in (os.SEEK_DATA, os.SEEK_HOLE):
        try:
            out.append(os.lseek(fd, off, whence))
        except OSError as e:
            out.append(e.errno)
print(out, os.fstat(fd).st_size, os.fstat(fd).st_blocks > 0)
EOF`);
  await shOk(`/usr/bin/python3 -c '
import os
fd = os.open("${mnt}/sparse", os.O_CREAT | os.O_WRONLY, 0o644)
os.pwrite(fd, b"x" * 4096, 1 << 20)
os.ftruncate(fd, 4 << 20)
os.close(fd)'`);
  const viaMount = await probe(`${mnt}/sparse`);
  assert.equal(viaMount, await probe(`${src}/sparse`));
  assert.match(viaMount, /^\[1048576, 0, 1048576, 4096, 1048576, 1052672,/);
});

fsTest("concurrent readers and writers", async ({ mnt, src }) => {
  // The readers' files are put beside the mount and read through it; each job's
  // status is waited for by pid (a bare `wait` drops failures).
  await shOk(`cp -r /usr/share/perl5 '${src}/r' && cd '${src}/r' &&
      find . -type f | sort | xargs md5sum > '${src}/expected'`);
  await shOk(`cd '${mnt}'
      pids=
      for i in $(seq 1 8); do
        (head -c 3000000 /dev/urandom > "w$i.tmp" && mv "w$i.tmp" "w$i") &
        pids="$pids $!"
      done
      for i in $(seq 1 8); do
        (cd r && find . -type f | sort | xargs md5sum > "../read$i") &
        pids="$pids $!"
      done
      for p in $pids; do wait "$p" || exit 1; done
      md5sum w* > sums`);
  assert.equal(await shOk(`cd '${src}' && md5sum -c sums | grep -c OK`), "8\n");
  const expected = await Deno.readTextFile(`${src}/expected`);
  assert.ok(expected.split("\n").length > 100, "enough files to read");
  for (let i = 1; i <= 8; i++) {
    assert.equal(await Deno.readTextFile(`${src}/read${i}`), expected, `reader ${i}`);
  }
});

fsTest("fio --verify on a file", async ({ mnt }) => {
  const out = await shOk(`fio --name=verify --filename='${mnt}/fio.dat' --size=32m --bs=4k \
      --rw=randwrite --ioengine=psync --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
      --numjobs=1 --output-format=terse --terse-version=3 2>&1`);
  assert.doesNotMatch(out, /verify: bad|error/i);
  assert.match(out, /^3;fio-/m);
});
