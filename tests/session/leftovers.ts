/**
 * What a session leaves behind, seen from outside it: on the remote (through plain
 * ssh on the direct path, which a cut `-wan` link does not stop) and here. Also the
 * small C project the build tests compile.
 */
import assert from "node:assert/strict";
import { sshConfigPath } from "../testbed/testbed.ts";
import { eventually } from "../eventually.ts";

/** Runs `script` on `host`'s machine (a `-wan` alias goes the direct way). */
export async function onRemote(host: string, script: string): Promise<string> {
  const out = await new Deno.Command("ssh", {
    args: ["-F", sshConfigPath, host.replace(/-wan$/, ""), script],
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout).trim();
}

/** What a session leaves behind when it has left nothing. */
export const CLEAN = "mounts=0 ours=0 dirs=0 named=0";

/**
 * On the remote: outrun's FUSE mounts in every namespace's view, processes of
 * outrun (the agent and helpers run from ~/.cache/outrun/, the warden is named
 * outrun-warden), the agent's mount points in /tmp, and processes named one of `names`.
 * The pattern is split so the script's own command line does not match it.
 */
export function remoteLeftovers(host: string, names: string[]): Promise<string> {
  return onRemote(
    host,
    `o=out; o=\${o}run; ours=0; for f in /proc/[0-9]*/cmdline; do ` +
      `case "$(tr '\\0' ' ' < $f 2>/dev/null)" in *$o/*|*$o-warden*) ours=$((ours + 1));; ` +
      `esac; done; ` +
      `echo "mounts=$(cat /proc/[0-9]*/mounts 2>/dev/null | grep -c fuse.$o) ours=$ours ` +
      `dirs=$(ls -d /tmp/$o-root-* 2>/dev/null | wc -l) ` +
      `named=$(cat /proc/[0-9]*/comm 2>/dev/null | grep -cxE '${names.join("|")}')"`,
  );
}

/** Waits until `host` shows nothing of a session (remoteLeftovers), or fails saying what is left. */
export async function remoteClean(host: string, ms: number, names: string[]): Promise<void> {
  let last = "";
  await eventually(
    `nothing of the session left on ${host}`,
    async () => (last = await remoteLeftovers(host, names)) === CLEAN,
    ms,
  ).catch((e) => {
    throw new Error(`${e.message}: ${last}`);
  });
}

/** Pids of the remote processes whose command line (spaces for NULs) holds `part`. */
export async function remotePids(host: string, part: string): Promise<number[]> {
  // Through a variable, so this script's own command line does not hold `part`.
  const text = await onRemote(
    host,
    `p=$(printf '${octal(part)}'); for f in /proc/[0-9]*/cmdline; do ` +
      `case "$(tr '\\0' ' ' < $f 2>/dev/null)" in *"$p"*) f=\${f#/proc/}; echo \${f%/cmdline};; ` +
      `esac; done`,
  );
  return text.split("\n").filter(Boolean).map(Number);
}

/** `text` as printf's octal escapes. */
function octal(text: string): string {
  return [...new TextEncoder().encode(text)].map((b) => `\\${b.toString(8).padStart(3, "0")}`)
    .join("");
}

/** Local processes whose command line holds `marker`. */
export async function localPids(marker: string): Promise<number[]> {
  const out = await new Deno.Command("pgrep", { args: ["-f", marker] }).output();
  return new TextDecoder().decode(out.stdout).split("\n").filter(Boolean).map(Number);
}

/** A directory the remote may read (the mirror shows this machine's files as they are). */
export async function workdir(prefix: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix });
  await Deno.chmod(dir, 0o755);
  return dir;
}

/**
 * A small C project in `dir`, `sources` files whose every one makes gcc warn
 * (distccd sends warnings with sendfile); returns the objects `make` builds.
 */
export async function cProject(dir: string, sources: number): Promise<string[]> {
  await Deno.writeTextFile(`${dir}/common.h`, "int helper(int);\n");
  const objects: string[] = [];
  for (let i = 0; i < sources; i++) {
    await Deno.writeTextFile(
      `${dir}/f${i}.c`,
      `#include "common.h"\nint f${i}(int x) {\n  int unused${i};\n` +
        `  return helper(x) * ${i + 1} + x / ${i + 2};\n}\n`,
    );
    objects.push(`f${i}.o`);
  }
  await Deno.writeTextFile(
    `${dir}/Makefile`,
    `OBJS = ${objects.join(" ")}\nall: $(OBJS)\n` +
      `%.o: %.c common.h\n\t$(CC) -O2 -Wall -c $< -o $@\n`,
  );
  return objects;
}
