/**
 * ControlMaster, the client's side: with `ControlMaster auto` (ssh_config or -o),
 * commands to one host share one session: its SSH connection, its agent and its
 * mounted mirror stay, held by a master process (master.ts) that listens on a
 * socket in ~/.outrun/sessions (mode 0700, so this user alone can use it). A
 * command connects there, says what it will run, and then speaks its own run
 * protocol with the agent through a tunnel: no SSH handshake, no payload check, no
 * agent start, no mount, and no validation round trip (the master checks what the
 * remote holds here, ahead of the command).
 *
 * The socket speaks one line first, each way:
 *   client: `run {"exe":..,"cwd":..}` | `check` | `exit`
 *   master: `ok [pid]` | `error <message>`
 * then, after `run`, the bytes of the command's RPC connection.
 */
import { type CliOptions, sshOptions } from "../cli.ts";
import { outrunHome } from "../home.ts";
import { DEFAULT_PATH } from "./which.ts";
import { RpcPeer } from "../rpc/mod.ts";
import { loadConfigBlocks, resolveDestination, SshError } from "../ssh/destination.ts";
import { VERSION } from "../version.ts";
import { hex } from "../sys/bytes.ts";

export interface Control {
  /** The master's socket. */
  path: string;
  /** Seconds an idle master stays (Infinity: until `-O exit` or a cut link). */
  persist: number;
  alias: string;
}

/** What the master needs to know of a command before it starts. */
export interface RunHeader {
  exe: string | null;
  cwd: string;
  /** argv[0] and PATH: the lookups along PATH go with the revalidation (`aheadPaths`). */
  argv0?: string;
  path?: string;
}

/** The socket for this destination, if ssh_config or -o asks for a shared session. */
export async function controlFor(
  o: CliOptions,
  log: (line: string) => void,
  /** The socket's place even when no master is asked for (-O). */
  always = false,
): Promise<Control | null> {
  const blocks = loadConfigBlocks({ ...sshOptions(o), log });
  const r = resolveDestination(sshOptions(o), blocks);
  const c = r.config;
  const wanted = c.controlMaster && c.controlMaster !== "no" && c.controlPath !== "none";
  if (!wanted && !always) return null;
  // Like ssh's %C: what makes two sessions interchangeable. The program too: a
  // master from other code (an upgrade, an edited checkout) may not speak this one's
  // protocol.
  const key = [
    r.user,
    r.hostname,
    r.port,
    o.jump ?? c.proxyJump ?? "",
    o.configFile ?? "",
    VERSION,
    programStamp(),
  ].join("\0");
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(key));
  const id = hex(new Uint8Array(digest).subarray(0, 10));
  return {
    path: `${sessionsDir()}/${id}.sock`,
    persist: c.controlPersist ?? 0,
    alias: r.alias,
  };
}

/**
 * Which program this is, cheaply: the main module's (or binary's) path, size and
 * mtime, and those of every file under lib/ next to it (a checkout; ~1 ms).
 */
function programStamp(): string {
  const main = new URL(Deno.mainModule);
  const parts: string[] = [];
  const stamp = (path: string) => {
    try {
      const st = Deno.statSync(path);
      parts.push(`${path}:${st.size}:${st.mtime?.getTime()}`);
    } catch { /* not there */ }
  };
  const walk = (dir: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      return;
    }
    for (const e of entries) {
      if (e.isDirectory) walk(`${dir}/${e.name}`);
      else if (e.isFile) stamp(`${dir}/${e.name}`);
    }
  };
  if (main.protocol === "file:") {
    stamp(main.pathname);
    walk(new URL("lib", main).pathname);
  }
  stamp(Deno.execPath());
  return parts.sort().join("\n");
}

export function sessionsDir(): string {
  return `${outrunHome()}/sessions`;
}

/** A connection to the master, after its first line. */
interface Attached {
  peer: RpcPeer;
  close(): Promise<void>;
}

/**
 * The command's RPC connection through this host's master, starting the master
 * when there is none. null: no master could be had for a reason that a session
 * of the command's own may not share (it then runs on one).
 */
export async function attachMaster(
  control: Control,
  o: CliOptions,
  log: (line: string) => void,
  /** argv[0] as found here (`resolveCommand`). */
  exe: string | null,
): Promise<Attached | null> {
  const cwd = Deno.cwd();
  const path = Deno.env.get("PATH") ?? DEFAULT_PATH;
  const header: RunHeader = {
    exe,
    cwd,
    argv0: o.command[0],
    path,
  };
  let conn: Deno.UnixConn | null;
  try {
    conn = await dial(control.path);
    if (!conn) await Deno.mkdir(sessionsDir(), { recursive: true, mode: 0o700 });
  } catch (e) {
    // As ssh goes on without a master it cannot reach or make: on a session of its own.
    log(`no master: ${control.path}: ${e}`);
    return null;
  }
  if (!conn) {
    log(`no master at ${control.path}: starting one`);
    await startMaster(control, o, log);
    conn = await dial(control.path);
    if (!conn) throw new SshError(`outrun: the master for ${control.alias} went away`);
  } else {
    log(`master at ${control.path}`);
  }
  const { line, rest } = await exchange(conn, `run ${JSON.stringify(header)}`);
  if (!line.startsWith("ok")) {
    conn.close();
    throw new SshError(`outrun: ${line.replace(/^error /, "")}`);
  }
  const reader = conn.readable.getReader();
  const readable = new ReadableStream<Uint8Array>({
    start(c) {
      if (rest.length) c.enqueue(rest);
    },
    async pull(c) {
      try {
        const { value, done } = await reader.read();
        if (done) c.close();
        else c.enqueue(value);
      } catch (e) {
        c.error(e);
      }
    },
    cancel: () => reader.cancel(),
  });
  const peer = new RpcPeer({ readable, writable: conn.writable }, { program: `outrun ${VERSION}` });
  return {
    peer,
    close: async () => {
      await peer.close();
      try {
        conn.close();
      } catch { /* closed */ }
    },
  };
}

/** `-O check` / `-O exit`: the master's pid, or the message why there is none. */
export async function controlCommand(
  control: Control,
  command: "check" | "exit",
): Promise<{ ok: boolean; message: string }> {
  const conn = await dial(control.path);
  if (!conn) return { ok: false, message: `Control socket connect(${control.path}): not running` };
  try {
    const { line } = await exchange(conn, command);
    return { ok: line.startsWith("ok"), message: line };
  } finally {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

/** The socket, or null when no master listens there (a dead one's socket is left to it). */
async function dial(path: string): Promise<Deno.UnixConn | null> {
  try {
    return await Deno.connect({ transport: "unix", path });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.ConnectionRefused) {
      return null;
    }
    throw e;
  }
}

/** Sends one line, reads one line back; `rest` is what came after it. */
export async function exchange(
  conn: Deno.Conn,
  line: string,
): Promise<{ line: string; rest: Uint8Array }> {
  const w = conn.writable.getWriter();
  await w.write(new TextEncoder().encode(`${line}\n`));
  w.releaseLock();
  return await readLine(conn);
}

/** One line from `conn` (without its newline), and the bytes read past it. */
export async function readLine(conn: Deno.Conn): Promise<{ line: string; rest: Uint8Array }> {
  let buf = new Uint8Array(0);
  const chunk = new Uint8Array(4096);
  while (true) {
    const nl = buf.indexOf(10);
    if (nl >= 0) {
      return {
        line: new TextDecoder().decode(buf.subarray(0, nl)),
        rest: buf.slice(nl + 1),
      };
    }
    if (buf.length > 64 * 1024) throw new Error("line too long");
    const n = await conn.read(chunk);
    if (n === null) {
      return {
        line: buf.length ? new TextDecoder().decode(buf) : "error the master closed",
        rest: new Uint8Array(0),
      };
    }
    const next = new Uint8Array(buf.length + n);
    next.set(buf);
    next.set(chunk.subarray(0, n), buf.length);
    buf = next;
  }
}

/**
 * Starts a master for `control` and waits until it says it serves (or why not). Its
 * prompts (passphrase, host key) go to this terminal, as ssh's do; once it serves
 * it writes nothing here, and outlives this process.
 */
async function startMaster(control: Control, o: CliOptions, log: (line: string) => void) {
  const main = new URL(Deno.mainModule);
  const compiled = main.pathname.includes("/deno-compile-");
  const args = compiled ? [] : ["run", "-A", "--quiet", ...configFlag(main), main.pathname];
  const spec = JSON.stringify({ options: o, socket: control.path, persist: control.persist });
  const child = new Deno.Command(Deno.execPath(), {
    args: [...args, "__master", spec],
    cwd: "/",
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  // Its messages before it serves (-v, warnings) are this command's.
  const errReader = child.stderr.getReader();
  (async () => {
    try {
      while (true) {
        const { value, done } = await errReader.read();
        if (done) break;
        await Deno.stderr.write(value);
      }
    } catch { /* closed */ }
  })();
  const outReader = child.stdout.getReader();
  let said = "";
  while (!said.includes("\n")) {
    const { value, done } = await outReader.read();
    if (done) break;
    said += new TextDecoder().decode(value);
  }
  const line = said.split("\n")[0];
  // Let go of its pipes (they would keep this process waiting), and of it.
  await outReader.cancel().catch(() => {});
  await errReader.cancel().catch(() => {});
  child.unref();
  if (line === "ready" || line === "busy") {
    log(`master ${line}`);
    return;
  }
  const status = line ? null : await child.status;
  throw new SshError(
    line.replace(/^error /, "") ||
      `outrun: the master for ${control.alias} exited (${status?.code ?? "?"})`,
  );
}

/** `--config DIR/deno.json` when the program runs from a checkout that has one. */
function configFlag(main: URL): string[] {
  const config = new URL("deno.json", main).pathname;
  try {
    Deno.statSync(config);
    return ["--config", config];
  } catch {
    return [];
  }
}
