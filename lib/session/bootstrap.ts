/**
 * Putting the program on the remote: a hash-named directory under the SSH user's
 * ~/.cache/outrun holding the runtime (the running deno executable) and the agent
 * (one bundled JS file). Uploaded only when missing; each file goes to a temporary
 * name, is verified by its SHA-256 on the remote, then renamed into place, so
 * concurrent first runs never see a partial file.
 */
import { Readable } from "node:stream";
import type { Client, ClientChannel } from "ssh2";
import { execCommand, SshError } from "../ssh/connect.ts";
import { VERSION } from "../version.ts";
import { localCacheDir } from "../home.ts";
import { type Closure, resolveClosure } from "../elf/mod.ts";
import { hex } from "../sys/bytes.ts";

export interface PayloadFile {
  name: string;
  path: string;
  sha256: string;
  mode: number;
}

export interface Payload {
  files: PayloadFile[];
  /** Directory name on the remote: version plus a digest of every file. */
  dirName: string;
  /** The file name of the dynamic loader that starts the runtime. */
  loader: string;
}

const HERE = new URL(".", import.meta.url).pathname;
const CACHE = localCacheDir();

/** Hex SHA-256 of `data`, or of its first `bytes` bytes' worth of digest. */
async function sha256Hex(data: Uint8Array<ArrayBuffer>, bytes = 32): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return hex(digest.subarray(0, bytes));
}

async function sha256File(path: string): Promise<string> {
  return await sha256Hex(await Deno.readFile(path));
}

/** SHA-256 of a large file, remembered per (path, size, mtime) so it is computed once. */
async function cachedSha256(path: string): Promise<string> {
  const st = await Deno.stat(path);
  const key = `${path}:${st.size}:${st.mtime?.getTime()}`.replace(/[^A-Za-z0-9.:_-]/g, "_");
  const memo = `${CACHE}/sha256/${key}`;
  try {
    return (await Deno.readTextFile(memo)).trim();
  } catch { /* not yet */ }
  const sum = await sha256File(path);
  await Deno.mkdir(`${CACHE}/sha256`, { recursive: true });
  await Deno.writeTextFile(memo, sum);
  return sum;
}

/** The agent as one JS file, bundled from this checkout (cached by a digest of lib/). */
async function agentBundle(): Promise<string> {
  const libDir = new URL("..", import.meta.url).pathname;
  const parts: string[] = [];
  for await (const f of walk(libDir)) parts.push(f, await sha256File(f));
  const id = await sha256Hex(new TextEncoder().encode(parts.join("\n")), 8);
  const out = `${CACHE}/agent-${VERSION}-${id}.js`;
  try {
    await Deno.stat(out);
    return out;
  } catch { /* build it */ }
  await Deno.mkdir(CACHE, { recursive: true });
  const tmp = `${out}.${Deno.pid}.tmp`;
  // deno finds its config from the working directory, which is the user's: name ours, or
  // the bare npm specifiers in deno.json's imports (lz4-wasm) do not resolve.
  const project = new URL("../../", import.meta.url).pathname;
  const result = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--config",
      `${project}deno.json`,
      "--platform",
      "deno",
      "-o",
      tmp,
      `${HERE}agent_main.ts`,
    ],
    cwd: project,
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!result.success) {
    throw new SshError(
      `outrun: bundling the agent failed: ${new TextDecoder().decode(result.stderr)}`,
    );
  }
  await Deno.rename(tmp, out);
  return out;
}

async function* walk(dir: string): AsyncGenerator<string> {
  const entries = [];
  for await (const e of Deno.readDir(dir)) entries.push(e);
  entries.sort((a, b) => a.name.localeCompare(b.name));
  for (const e of entries) {
    if (e.isDirectory) yield* walk(`${dir}/${e.name}`);
    else if (e.isFile) yield `${dir}/${e.name}`;
  }
}

/**
 * The runtime's library closure, remembered per (runtime, ld.so.cache) size and
 * mtime: resolving it took ~430 ms of every run, for the same answer.
 */
async function cachedClosure(runtime: string): Promise<Closure> {
  const stamp = async (p: string) => {
    try {
      const st = await Deno.stat(p);
      return `${p}:${st.size}:${st.mtime?.getTime()}`;
    } catch {
      return `${p}:-`;
    }
  };
  const key = (await stamp(runtime)) + "|" + (await stamp("/etc/ld.so.cache"));
  const memo = `${CACHE}/closure/${await sha256Hex(new TextEncoder().encode(key), 16)}.json`;
  try {
    const saved = JSON.parse(await Deno.readTextFile(memo)) as Closure;
    // Still there, all of it (a library removed since means resolving again).
    const paths = [saved.interp!, ...saved.libraries.map((l) => l.path)];
    if (
      (await Promise.all(paths.map((p) => Deno.stat(p).then(() => true, () => false)))).every(
        Boolean,
      )
    ) {
      return saved;
    }
  } catch { /* not yet */ }
  const closure = resolveClosure(runtime);
  if (closure.interp && !closure.missing.length) {
    await Deno.mkdir(`${CACHE}/closure`, { recursive: true });
    const tmp = `${memo}.${Deno.pid}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(closure));
    await Deno.rename(tmp, memo);
  }
  return closure;
}

/**
 * The runtime (deno), its dynamic loader and the libraries it needs (its ELF closure,
 * resolved as ld.so would), and the agent. The remote starts deno through the
 * shipped loader with the shipped libraries, so a remote without glibc (or with an
 * older one) runs it all the same.
 */
export async function localPayload(): Promise<Payload> {
  const runtime = Deno.execPath();
  const agent = await agentBundle();
  const closure = await cachedClosure(runtime);
  if (!closure.interp || closure.missing.length) {
    throw new SshError(
      `outrun: cannot ship the runtime ${runtime}: ` +
        (closure.interp ? `missing ${closure.missing.join(", ")}` : "it has no ELF interpreter"),
    );
  }
  const files: PayloadFile[] = [
    { name: "deno", path: runtime, sha256: await cachedSha256(runtime), mode: 0o755 },
    { name: "agent.js", path: agent, sha256: await sha256File(agent), mode: 0o644 },
  ];
  // libzstd, when this machine has it: the agent decompresses cached chunks with it
  // (lib/sys/zstd.ts), ~5x faster than node:zlib here. Optional on both sides.
  const zstd = await localLibzstd(closure);
  const extra = zstd ? [zstd] : [];
  for (const path of [closure.interp, ...closure.libraries.map((l) => l.path), ...extra]) {
    files.push({
      name: path === zstd ? "libzstd.so.1" : path.slice(path.lastIndexOf("/") + 1),
      path,
      sha256: await cachedSha256(path),
      mode: 0o755,
    });
  }
  const all = files.map((f) => `${f.name}:${f.sha256}`).join("");
  const id = await sha256Hex(new TextEncoder().encode(all), 8);
  return { files, loader: files[2].name, dirName: `${VERSION}-${id}` };
}

/** This machine's libzstd.so.1 (its file), looked for where the runtime's libraries are. */
async function localLibzstd(closure: Closure): Promise<string | null> {
  const dirs = new Set([
    ...closure.libraries.map((l) => l.path.slice(0, l.path.lastIndexOf("/"))),
    `/usr/lib/${Deno.build.arch}-linux-gnu`,
    `/lib/${Deno.build.arch}-linux-gnu`,
    "/usr/lib64",
    "/usr/lib",
  ]);
  for (const dir of dirs) {
    try {
      return await Deno.realPath(`${dir}/libzstd.so.1`);
    } catch { /* not here */ }
  }
  return null;
}

/** The shell command that starts the agent in the payload directory `dir` (see agent_main). */
export function agentCommand(
  payload: Payload,
  dir: string,
  sudo: boolean,
  verbose = 0,
): string {
  // OUTRUN_DEBUG=1 here makes the agent write /tmp/outrun-agent.log there; -v makes it
  // name on stderr each call it makes here, with its round trip.
  const vars = [
    ...(Deno.env.get("OUTRUN_DEBUG") === "1" ? ["OUTRUN_DEBUG=1"] : []),
    ...(verbose > 0 ? [`OUTRUN_VERBOSE=${verbose}`] : []),
  ];
  const debug = vars.length ? `env ${vars.join(" ")} ` : "";
  // OUTRUN_AGENT_PROFILE=DIR: a V8 CPU profile of the agent in DIR there, at its exit.
  const profile = Deno.env.get("OUTRUN_AGENT_PROFILE");
  const flags = profile ? ` --cpu-prof --cpu-prof-dir=${JSON.stringify(profile)}` : "";
  return `cd ${dir} && exec ${sudo ? "sudo -n " : ""}${debug}"$PWD/${payload.loader}" ` +
    `--library-path "$PWD" "$PWD/deno" run -A --quiet --no-config${flags} "$PWD/agent.js" ` +
    `agent "$PWD"`;
}

const ARCH_NAMES: Record<string, string> = { x86_64: "x86_64", aarch64: "aarch64" };

/** gzip-compressed bytes of a payload file, made once and kept next to the other caches. */
async function gzipped(f: PayloadFile): Promise<Uint8Array<ArrayBuffer>> {
  const path = `${CACHE}/gz/${f.sha256}.gz`;
  try {
    return await Deno.readFile(path);
  } catch { /* make it */ }
  const stream = (await Deno.open(f.path)).readable.pipeThrough(new CompressionStream("gzip"));
  const bytes = new Uint8Array(await new Response(stream).arrayBuffer());
  await Deno.mkdir(`${CACHE}/gz`, { recursive: true });
  const tmp = `${path}.${Deno.pid}.tmp`;
  await Deno.writeFile(tmp, bytes);
  await Deno.rename(tmp, path);
  return bytes;
}

/** A one-line progress bar on stderr when it is a terminal. */
function progressBar(
  label: string,
  total: number,
  quiet: boolean,
): ((sent: number) => void) & { done(): void } {
  const tty = !quiet && Deno.stderr.isTerminal();
  let last = -1;
  const write = (s: string) => Deno.stderr.writeSync(new TextEncoder().encode(s));
  const update = (sent: number) => {
    if (!tty) return;
    const pct = Math.floor((sent / Math.max(total, 1)) * 100);
    if (pct === last) return;
    last = pct;
    const width = 30;
    const fill = Math.round((pct / 100) * width);
    write(
      `\r\x1b[Koutrun: ${label} [${"#".repeat(fill)}${" ".repeat(width - fill)}] ${pct}% ` +
        `${(sent / 1048576).toFixed(1)}/${(total / 1048576).toFixed(1)} MB`,
    );
  };
  return Object.assign(update, { done: () => tty && last >= 0 && write("\r\x1b[K") });
}

/** The line that ends the probe's answer: what follows is the agent's, or nothing. */
const MARK = "outrun-agent=";

/** `s` as one word for sh. */
function shellWord(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** A configured path (`~/...` is the remote user's home) as one word for sh. */
function shellPath(path: string): string {
  return /^~(\/|$)/.test(path) ? `"$HOME"${shellWord(path.slice(1))}` : shellWord(path);
}

export interface StartedAgent {
  channel: ClientChannel;
  /**
   * What came on stderr before the caller listens (the agent's first words, when it
   * starts in the probe's channel and fails at once).
   */
  stderr: string;
  /** The agent's stdout from its first byte (the probe's lines taken off). */
  stdout: ReadableStream<Uint8Array>;
  /**
   * Whether the remote cache's directory was there (null: not looked at: no cache,
   * or the agent runs as another user through sudo, whose home is not ours to see).
   */
  storePresent: boolean | null;
}

export interface AgentStart {
  sudo: boolean;
  verbose: number;
  /** -q: no progress bar while uploading. */
  quiet?: boolean;
  /** The remote cache's directory as configured (`~/...` or absolute), to look for. */
  storeDir: string | null;
}

/**
 * Starts the agent, putting the payload there first when it is missing. One exec
 * does both in the usual case: a probe (architecture, gzip, which payload files are
 * there, whether the cache directory is) and, when every file is there, the agent
 * itself in the same channel: no second channel and exec round trip. Otherwise the
 * missing files are uploaded (each to a temporary name, checked by its SHA-256 there,
 * renamed into place: present means verified) and the agent started in a new channel.
 */
export async function startAgent(
  client: Client,
  payload: Payload,
  o: AgentStart,
  log: (line: string) => void,
): Promise<StartedAgent> {
  const dir = `.cache/outrun/${payload.dirName}`;
  const names = payload.files.map((f) => f.name).join(" ");
  const store = o.storeDir && !o.sudo ? shellPath(o.storeDir) : null;
  const script = [
    'echo "arch=$(uname -m)"',
    "command -v gzip >/dev/null 2>&1 && echo gzip=yes",
    `lacks=; for f in ${names}; do if [ -f "${dir}/$f" ]; then echo "have=$f"; else lacks=y; fi; done`,
    ...(store ? [`[ -e ${store} ] && echo store=yes`] : []),
    `if [ -z "$lacks" ]; then echo ${MARK}ready; ${
      agentCommand(payload, dir, o.sudo, o.verbose)
    }; fi`,
    `echo ${MARK}missing`,
  ].join("; ");
  const channel = await execChannel(client, script);
  const reader = (Readable.toWeb(channel) as unknown as ReadableStream<Uint8Array>).getReader();
  let stderr = "";
  const onStderr = (d: Uint8Array) => (stderr += new TextDecoder().decode(d));
  channel.stderr.on("data", onStderr);
  const { lines, rest } = await readProbe(reader).catch((e) => {
    throw new SshError(`outrun: the remote's probe failed (${e.message}): ${stderr.trim()}`);
  });
  channel.stderr.off("data", onStderr);
  // Held until the caller listens: the agent's first words may come at once.
  channel.stderr.pause();
  // By name: a line missing (no uname there) must not make the next one the answer.
  const remoteArch = lines.find((l) => l.startsWith("arch="))?.slice(5).trim();
  if (remoteArch !== ARCH_NAMES[Deno.build.arch]) {
    channel.close();
    throw new SshError(
      `outrun: the remote is ${remoteArch || "of an unknown architecture"}, this machine is ` +
        `${Deno.build.arch}: outrun runs local programs, so both must be the same`,
    );
  }
  const storePresent = store ? lines.includes("store=yes") : null;
  if (lines.at(-1) === `${MARK}ready`) {
    return { channel, stdout: prepend(rest, reader), storePresent, stderr };
  }
  reader.cancel().catch(() => {});
  const present = new Set(lines.filter((l) => l.startsWith("have=")).map((l) => l.slice(5)));
  await uploadMissing(client, payload, dir, present, lines.includes("gzip=yes"), log, o.quiet);
  const agent = await execChannel(client, agentCommand(payload, dir, o.sudo, o.verbose));
  return {
    channel: agent,
    stdout: Readable.toWeb(agent) as unknown as ReadableStream<Uint8Array>,
    storePresent,
    stderr: "",
  };
}

function execChannel(client: Client, command: string): Promise<ClientChannel> {
  return new Promise((resolve, reject) =>
    client.exec(
      command,
      (err, ch) => (err ? reject(new SshError(`outrun: ${err.message}`)) : resolve(ch)),
    )
  );
}

/** The probe's lines up to and with the mark, and the bytes after them (the agent's). */
export async function readProbe(
  reader: ReadableStreamDefaultReader<Uint8Array>,
): Promise<{ lines: string[]; rest: Uint8Array }> {
  const lines: string[] = [];
  let held = new Uint8Array(0);
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error("it ended before its last line");
    const joined = new Uint8Array(held.length + value.length);
    joined.set(held);
    joined.set(value, held.length);
    held = joined;
    let nl;
    while ((nl = held.indexOf(10)) >= 0) {
      const line = new TextDecoder().decode(held.subarray(0, nl));
      held = held.subarray(nl + 1);
      lines.push(line);
      if (line.startsWith(MARK)) return { lines, rest: held };
    }
    if (held.length > 64 * 1024) throw new Error("no end to its answer");
  }
}

/** `first`, then whatever `reader` reads. */
function prepend(
  first: Uint8Array,
  reader: ReadableStreamDefaultReader<Uint8Array>,
): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(c) {
      if (first.length) c.enqueue(first);
    },
    async pull(c) {
      const { value, done } = await reader.read();
      if (done) c.close();
      else c.enqueue(value);
    },
    cancel(reason) {
      return reader.cancel(reason);
    },
  });
}

/**
 * Uploads the payload files not `present` in `dir` there, each to a temporary name,
 * checked by its SHA-256 there, then renamed into place.
 */
async function uploadMissing(
  client: Client,
  payload: Payload,
  dir: string,
  present: Set<string>,
  gzip: boolean,
  log: (line: string) => void,
  quiet = false,
): Promise<void> {
  for (const f of payload.files) {
    if (present.has(f.name)) continue;
    const data = gzip ? await gzipped(f) : await Deno.readFile(f.path);
    log(`uploading ${f.name} (${data.length} bytes${gzip ? ", gzip" : ""}) to ${dir}`);
    const tmp = `${dir}/.${f.name}.$$`;
    const bar = progressBar(`uploading ${f.name}`, data.length, quiet);
    const r = await execCommand(
      client,
      `mkdir -p ${dir} && ${gzip ? "gzip -dc" : "cat"} > ${tmp} && sum=$(sha256sum ${tmp}) && ` +
        `[ "\${sum%% *}" = ${f.sha256} ] && chmod ${
          f.mode.toString(8)
        } ${tmp} && mv -f ${tmp} ${dir}/${f.name} ` +
        `|| { rm -f ${tmp}; echo "verification failed" >&2; exit 1; }`,
      data,
      bar,
    );
    bar.done();
    if (r.code !== 0) {
      throw new SshError(
        `outrun: uploading ${f.name} failed: ${r.stderr.trim() || `exit ${r.code}`}`,
      );
    }
  }
}
