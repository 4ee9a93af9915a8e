/**
 * Putting the program on the remote: a hash-named directory under the SSH user's
 * ~/.cache/outrun holding the runtime (the running deno executable) and the agent
 * (one bundled JS file). Uploaded only when missing; each file goes to a temporary
 * name, is verified by its SHA-256 on the remote, then renamed into place, so
 * concurrent first runs never see a partial file.
 */
import type { Client } from "ssh2";
import { execCommand, SshError } from "../ssh/connect.ts";
import { VERSION } from "../version.ts";

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
}

const HERE = new URL(".", import.meta.url).pathname;
const CACHE = `${
  Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME") ?? "/tmp"}/.cache`
}/outrun`;

/** Hex SHA-256 of `data`, or of its first `bytes` bytes' worth of digest. */
async function sha256Hex(data: Uint8Array<ArrayBuffer>, bytes = 32): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return [...digest.subarray(0, bytes)].map((b) => b.toString(16).padStart(2, "0")).join("");
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
  const result = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform", "deno", "-o", tmp, `${HERE}agent_main.ts`],
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

export async function localPayload(): Promise<Payload> {
  const runtime = Deno.execPath();
  const agent = await agentBundle();
  const files: PayloadFile[] = [
    { name: "deno", path: runtime, sha256: await cachedSha256(runtime), mode: 0o755 },
    { name: "agent.js", path: agent, sha256: await sha256File(agent), mode: 0o644 },
  ];
  const all = files.map((f) => f.sha256).join("");
  const id = await sha256Hex(new TextEncoder().encode(all), 8);
  return { files, dirName: `${VERSION}-${id}` };
}

const ARCH_NAMES: Record<string, string> = { x86_64: "x86_64", aarch64: "aarch64" };

/** Makes sure the payload is on the remote; returns its directory (relative to home). */
export async function ensurePayload(
  client: Client,
  payload: Payload,
  log: (line: string) => void,
): Promise<string> {
  const dir = `.cache/outrun/${payload.dirName}`;
  const probe = await execCommand(
    client,
    `uname -m; cd ${dir} 2>/dev/null && sha256sum ${
      payload.files.map((f) => f.name).join(" ")
    } 2>/dev/null`,
  );
  const lines = new TextDecoder().decode(probe.stdout).trim().split("\n");
  const remoteArch = lines[0]?.trim();
  if (remoteArch !== ARCH_NAMES[Deno.build.arch]) {
    throw new SshError(
      `outrun: the remote is ${remoteArch || "of an unknown architecture"}, this machine is ` +
        `${Deno.build.arch}: outrun runs local programs, so both must be the same`,
    );
  }
  const present = new Map(
    lines.slice(1).map((l) => {
      const [sum, name] = l.trim().split(/\s+/);
      return [name, sum];
    }),
  );
  for (const f of payload.files) {
    if (present.get(f.name) === f.sha256) continue;
    log(`uploading ${f.name} (${(await Deno.stat(f.path)).size} bytes) to ${dir}`);
    const tmp = `${dir}/.${f.name}.$$`;
    const r = await execCommand(
      client,
      `mkdir -p ${dir} && cat > ${tmp} && sum=$(sha256sum ${tmp}) && ` +
        `[ "\${sum%% *}" = ${f.sha256} ] && chmod ${
          f.mode.toString(8)
        } ${tmp} && mv -f ${tmp} ${dir}/${f.name} ` +
        `|| { rm -f ${tmp}; echo "verification failed" >&2; exit 1; }`,
      await Deno.readFile(f.path),
    );
    if (r.code !== 0) {
      throw new SshError(
        `outrun: uploading ${f.name} failed: ${r.stderr.trim() || `exit ${r.code}`}`,
      );
    }
  }
  return dir;
}
