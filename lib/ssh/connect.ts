/**
 * One SSH connection made the way OpenSSH would make it for the same command line
 * and configuration: ssh_config (-F, else ~/.ssh/config then /etc/ssh/ssh_config),
 * known_hosts with StrictHostKeyChecking, identity files and the agent, keepalives,
 * ProxyJump. Failures are `SshError`s whose message is the one line OpenSSH would
 * print (outrun then exits 255).
 */
// @deno-types="@types/ssh2"
import { Client, type ClientChannel, type ConnectConfig, utils } from "ssh2";
import { askTerminal, promptWait } from "./prompt.ts";
import { expandPath } from "./config.ts";
import { checkHostKey, knownHostsLine, parseKnownHosts } from "./known_hosts.ts";
import { describeConnectError, tcpConnect } from "./tcp.ts";

export {
  loadConfigBlocks,
  type Resolved,
  resolveDestination,
  SshError,
  type SshOptions,
} from "./destination.ts";
import {
  home,
  loadConfigBlocks,
  localUser,
  readIfExists,
  type Resolved,
  resolveDestination,
  SshError,
  type SshOptions,
} from "./destination.ts";

type ParsedKey = ReturnType<typeof utils.parseKey>;

/** An identity file: parsed, or encrypted (its passphrase is asked for when its turn comes). */
type Identity = { path: string; key: ParsedKey } | { path: string; encrypted: string };

function identityKeys(r: Resolved, options: SshOptions): Identity[] {
  const configured = [...(options.identityFiles ?? []), ...r.config.identityFiles];
  const defaults = ["~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa"];
  const paths = (configured.length ? configured : defaults)
    .map((p) => expandPath(p, r.hostname, home(), localUser()));
  const keys: Identity[] = [];
  for (const path of paths) {
    const text = readIfExists(path);
    if (text === null) {
      if (configured.length) options.log?.(`no such identity: ${path}`);
      continue;
    }
    const key = utils.parseKey(text);
    if (key instanceof Error) {
      if (/passphrase|encrypted/i.test(key.message)) keys.push({ path, encrypted: text });
      else options.log?.(`${path}: ${key.message}`);
      continue;
    }
    keys.push({ path, key });
  }
  return keys;
}

function knownHostsFiles(r: Resolved): string[] {
  const user = r.config.userKnownHostsFiles ?? ["~/.ssh/known_hosts", "~/.ssh/known_hosts2"];
  const global = r.config.globalKnownHostsFiles ??
    ["/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"];
  return [...user, ...global].filter((f) => f !== "none" && f !== "/dev/null")
    .map((f) => expandPath(f, r.hostname, home(), localUser()));
}

function keyTypeOf(blob: Uint8Array): string {
  const len = new DataView(blob.buffer, blob.byteOffset).getUint32(0);
  return new TextDecoder().decode(blob.subarray(4, 4 + len));
}

/** OpenSSH's tries at a passphrase (NumberOfPasswordPrompts). */
const PASSPHRASE_TRIES = 3;

/** The key in an encrypted identity file, once its passphrase is typed; null if not. */
async function unlockKey(
  path: string,
  text: string,
  log: (s: string) => void,
): Promise<ParsedKey | null> {
  for (let i = 0; i < PASSPHRASE_TRIES; i++) {
    const passphrase = await askTerminal(`Enter passphrase for key '${path}': `, true);
    if (passphrase === null) {
      log(`${path}: encrypted, and no terminal to ask for its passphrase`);
      return null;
    }
    if (passphrase === "") return null; // OpenSSH: an empty answer skips the key
    const key = utils.parseKey(text, passphrase);
    if (!(key instanceof Error)) return key;
  }
  return null;
}

/** SHA256:base64 of a key blob, as OpenSSH prints fingerprints. */
async function fingerprintOf(blob: Uint8Array): Promise<string> {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", new Uint8Array(blob)));
  return `SHA256:${btoa(String.fromCharCode(...digest)).replace(/=+$/, "")}`;
}

/** OpenSSH's dialogue for an unknown host key under StrictHostKeyChecking=ask. */
async function askHostKey(
  name: string,
  address: string,
  type: string,
  blob: Uint8Array,
): Promise<boolean | null> {
  const fp = await fingerprintOf(blob);
  const label = type.replace(/^ssh-/, "").replace(/-.*$/, "").toUpperCase();
  let question = `The authenticity of host '${name} (${address})' can't be established.\n` +
    `${label} key fingerprint is ${fp}.\n` +
    `Are you sure you want to continue connecting (yes/no/[fingerprint])? `;
  while (true) {
    const answer = await askTerminal(question, false);
    if (answer === null) return null;
    const a = answer.trim();
    if (a === "yes" || a === fp) return true;
    if (a === "no") return false;
    question = "Please type 'yes', 'no' or the fingerprint: ";
  }
}

/** Where ssh's notices go (a host key added): stderr, unless -q or a quiet LogLevel. */
function notices(options: SshOptions, r: Resolved): (line: string) => void {
  const level = r.config.logLevel ?? "info";
  const quiet = options.quiet || ["quiet", "fatal", "error"].includes(level);
  return quiet ? options.log ?? (() => {}) : (line) => console.error(line);
}

function addKnownHost(
  files: string[],
  r: Resolved,
  type: string,
  blob: Uint8Array,
  log: (s: string) => void,
): void {
  const file = files[0];
  const name = r.port === 22 ? r.hostname : `[${r.hostname}]:${r.port}`;
  if (!file) return;
  try {
    Deno.mkdirSync(file.replace(/\/[^/]*$/, ""), { recursive: true, mode: 0o700 });
    Deno.writeTextFileSync(file, knownHostsLine(r.hostname, r.port, type, blob), { append: true });
    log(`Warning: Permanently added '${name}' (${type}) to the list of known hosts.`);
  } catch { /* a read-only known_hosts: accept for this connection only */ }
}

/** An unknown host key under StrictHostKeyChecking=ask: to be asked about. */
interface UnknownKey {
  name: string;
  type: string;
  blob: Uint8Array;
}

/**
 * ssh2's hostVerifier: the known_hosts verdict under StrictHostKeyChecking; null
 * means accepted. It must answer synchronously (ssh2 1.17 stalls after an
 * asynchronous verdict), so "ask" comes back as the key to ask about, and the
 * caller asks once the attempt has failed.
 */
function verifyHostKey(
  r: Resolved,
  blob: Uint8Array,
  log: (s: string) => void,
): string | null | UnknownKey {
  const files = knownHostsFiles(r);
  const lines = files.flatMap((f) => parseKnownHosts(readIfExists(f) ?? "", f));
  const verdict = checkHostKey(lines, r.hostname, r.port, blob);
  const type = keyTypeOf(blob);
  const name = r.port === 22 ? r.hostname : `[${r.hostname}]:${r.port}`;
  switch (verdict.kind) {
    case "match":
      return null;
    case "revoked":
      return `Host key for ${name} was revoked (${verdict.file}:${verdict.line}). Host key verification failed.`;
    case "changed":
      return `WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! The ${type} key of ${name} is not ` +
        `the one in ${verdict.file}:${verdict.line}. Host key verification failed.`;
    case "unknown": {
      const strict = r.config.strictHostKeyChecking ?? "ask";
      if (strict === "no" || strict === "off" || strict === "accept-new") {
        addKnownHost(files, r, type, blob, log);
        return null;
      }
      if (strict === "ask") return { name, type, blob };
      return `No ${type} host key is known for ${name} and you have requested strict checking. ` +
        `Host key verification failed.`;
    }
  }
}

/** Connects (through every ProxyJump hop first); resolves once authenticated. */
export async function connect(
  options: SshOptions,
): Promise<{ client: Client; resolved: Resolved }> {
  const log = options.log ?? (() => {});
  const blocks = loadConfigBlocks(options);
  const r = resolveDestination(options, blocks);
  // "none" (ssh's word, and what each hop is connected with) means no jump.
  const jumpSpec = options.jump ?? r.config.proxyJump;
  const jump = jumpSpec && jumpSpec !== "none" ? jumpSpec : undefined;
  let sock: ClientChannel | undefined;
  let jumpClient: Client | undefined;
  if (jump) {
    const hops = jump.split(",");
    const last = hops.pop()!;
    const via = await connect({
      ...options,
      destination: last.replace(/:(\d+)$/, ""),
      port: /:(\d+)$/.test(last) ? Number(/:(\d+)$/.exec(last)![1]) : undefined,
      user: undefined,
      jump: hops.length ? hops.join(",") : "none",
      identityFiles: options.identityFiles,
      socket: undefined,
    });
    jumpClient = via.client;
    sock = await new Promise<ClientChannel>((resolve, reject) =>
      via.client.forwardOut(
        "127.0.0.1",
        0,
        r.hostname,
        r.port,
        (err, ch) =>
          err
            ? reject(new SshError(`ssh: jump to ${r.hostname}:${r.port}: ${err.message}`))
            : resolve(ch),
      )
    );
  }
  if (!sock) sock = await (options.socket ?? tcpConnect(r)) as unknown as ClientChannel;
  coalesceWrites(sock as unknown as WriteEnd);
  const keys = identityKeys(r, options);
  const agent = !r.config.identitiesOnly ? Deno.env.get("SSH_AUTH_SOCK") : undefined;
  // As OpenSSH: keys that need nothing first, then the agent, then encrypted keys
  // (a passphrase is asked for only when the others did not do).
  const plain = keys.filter((k): k is { path: string; key: ParsedKey } => "key" in k);
  const locked = keys.filter((k): k is { path: string; encrypted: string } => "encrypted" in k);
  const methods: (() => unknown)[] = [
    ...plain.map((k) => () => ({ type: "publickey", username: r.user, key: k.key })),
    ...(agent ? [() => ({ type: "agent", username: r.user, agent })] : []),
    ...locked.map((k) => async () => {
      const key = await unlockKey(k.path, k.encrypted, log);
      return key ? { type: "publickey", username: r.user, key } : null;
    }),
  ];
  let hostKeyProblem: string | null = null;
  let unknownKey: UnknownKey | null = null;
  const client = new Client();
  const interval = (r.config.serverAliveInterval ?? 5) * 1000;
  const config: ConnectConfig = {
    host: r.hostname,
    port: r.port,
    username: r.user,
    sock,
    // Our watchdog below times the handshake instead: ssh2's cannot leave out the
    // time spent answering a question on the terminal.
    readyTimeout: 2 ** 31 - 1,
    keepaliveInterval: interval,
    keepaliveCountMax: r.config.serverAliveCountMax ?? 3,
    hostVerifier: (key: Uint8Array) => {
      const verdict = verifyHostKey(r, new Uint8Array(key), notices(options, r));
      if (verdict !== null && typeof verdict === "object") {
        unknownKey = verdict;
        hostKeyProblem = "Host key verification failed.";
      } else hostKeyProblem = verdict;
      return hostKeyProblem === null;
    },
    authHandler: (_left: unknown, _partial: unknown, next: (m: unknown) => void) => {
      const tryNext = (): void => {
        const method = methods.shift();
        if (!method) return next(false);
        Promise.resolve(method()).then((m) => (m ? next(m) : tryNext()), () => tryNext());
      };
      tryNext();
    },
  } as unknown as ConnectConfig;
  log(`connecting to ${r.user}@${r.hostname}:${r.port}${jump ? ` via ${jump}` : ""}`);
  try {
    await handshake(client, config, r, () => hostKeyProblem);
  } catch (err) {
    jumpClient?.end();
    const key = unknownKey as UnknownKey | null;
    if (!key) throw err;
    // StrictHostKeyChecking=ask: the question, then (on yes) the connection again.
    const yes = await askHostKey(key.name, r.hostname, key.type, key.blob);
    if (yes === false) throw new SshError("Host key verification failed.");
    if (yes === null) {
      throw new SshError(
        `No ${key.type} host key is known for ${key.name} and there is no terminal to ask ` +
          `about it. Host key verification failed.`,
      );
    }
    addKnownHost(knownHostsFiles(r), r, key.type, key.blob, notices(options, r));
    // On a new connection: the first one (an early one too) went with its handshake.
    return await connect({ ...options, socket: undefined });
  }
  if (jumpClient) client.once("close", () => jumpClient!.end());
  return { client, resolved: r };
}

/**
 * Runs the SSH handshake and authentication. ConnectTimeout bounds it, leaving out
 * the time spent answering questions on the terminal (ssh2's readyTimeout cannot).
 */
function handshake(
  client: Client,
  config: ConnectConfig,
  r: Resolved,
  hostKeyProblem: () => string | null,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const limit = (r.config.connectTimeout ?? 20) * 1000;
    const started = performance.now();
    const spentBefore = promptWait().spentMs;
    const watchdog = setInterval(() => {
      const wait = promptWait();
      if (wait.open > 0) return;
      if (performance.now() - started - (wait.spentMs - spentBefore) < limit) return;
      clearInterval(watchdog);
      client.end();
      reject(
        new SshError(`ssh: connect to host ${r.hostname} port ${r.port}: Connection timed out`),
      );
    }, 250);
    client.once("ready", () => {
      clearInterval(watchdog);
      resolve();
    });
    client.once("close", () => clearInterval(watchdog));
    client.once("error", (err: Error & { code?: string; level?: string }) => {
      clearInterval(watchdog);
      reject(new SshError(hostKeyProblem() ?? describeConnectError(r, err)));
    });
    client.connect(config);
  });
}

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: Uint8Array;
  stderr: string;
}

/**
 * A channel as a WritableStream whose writes resolve once ssh2 has taken each chunk
 * (cut into packets and encrypted; it waits for the window to do so): the chunk may
 * then be used again (an RPC Transport's `reusable`). Writable.toWeb resolves as soon
 * as node:stream has queued a chunk, still unsent.
 */
export function channelWritable(channel: ClientChannel): WritableStream<Uint8Array> {
  return new WritableStream<Uint8Array>({
    write: (chunk) =>
      new Promise<void>((resolve, reject) =>
        channel.write(chunk, (err?: Error | null) => (err ? reject(err) : resolve()))
      ),
    close: () => {
      channel.end();
    },
    abort: () => {
      channel.destroy();
    },
  });
}

/** The part of a writable stream that coalesceWrites changes. */
interface WriteEnd {
  write(chunk: unknown, ...rest: unknown[]): boolean;
  end(...args: unknown[]): unknown;
}

/**
 * Makes the writes made to `sock` in one turn of the event loop reach it as one write
 * (up to `cap` bytes each). ssh2 writes every packet in three pieces (length, body,
 * MAC): a megabyte pushed was ~100 socket writes, each through node:stream's
 * machinery and, with TCP_NODELAY, mostly its own TCP segment for the other end to
 * take one at a time. Order is kept; a write with a callback or an encoding first
 * sends what waits. ssh2 never looks at write()'s result (the SSH window is its
 * flow control), and, as with any stream, does not reuse a buffer it has written.
 */
export function coalesceWrites(sock: WriteEnd, cap = 256 * 1024): void {
  const write = sock.write.bind(sock);
  const end = sock.end.bind(sock);
  let pending: Uint8Array[] = [];
  let size = 0;
  let scheduled = false;
  /** Buffers joined writes went out in, back once the socket wrote them (fresh memory is dear). */
  const spare: Uint8Array[] = [];
  const flush = () => {
    scheduled = false;
    if (!pending.length) return;
    const parts = pending;
    const n = size;
    pending = [];
    size = 0;
    if (parts.length === 1) {
      write(parts[0]);
      return;
    }
    const buf = spare.pop() ?? new Uint8Array(cap + 64 * 1024);
    const out = n <= buf.length ? buf.subarray(0, n) : new Uint8Array(n);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    if (out.buffer !== buf.buffer) {
      spare.push(buf);
      write(out);
      return;
    }
    write(out, () => {
      if (spare.length < 4) spare.push(buf);
    });
  };
  sock.write = (chunk: unknown, ...rest: unknown[]): boolean => {
    if (rest.length || !(chunk instanceof Uint8Array)) {
      flush();
      return write(chunk, ...rest);
    }
    pending.push(chunk);
    size += chunk.length;
    if (size >= cap) flush();
    else if (!scheduled) {
      scheduled = true;
      queueMicrotask(flush);
    }
    return true;
  };
  sock.end = (...args: unknown[]) => {
    flush();
    return end(...args);
  };
}

/** Runs a remote shell command to completion, feeding `stdin` (which may be large). */
export function execCommand(
  client: Client,
  command: string,
  stdin?: Uint8Array,
  progress?: (sent: number) => void,
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    client.exec(command, (err, ch) => {
      if (err) return reject(new SshError(`ssh: exec: ${err.message}`));
      const out: Uint8Array[] = [];
      let stderr = "";
      let code: number | null = null;
      let signal: string | null = null;
      ch.on("data", (d: Uint8Array) => out.push(new Uint8Array(d)));
      ch.stderr.on("data", (d: Uint8Array) => (stderr += new TextDecoder().decode(d)));
      ch.on("exit", (c: number | null, s?: string) => {
        code = c;
        signal = s ?? null;
      });
      ch.on("close", () => {
        const total = out.reduce((n, b) => n + b.length, 0);
        const stdout = new Uint8Array(total);
        let at = 0;
        for (const b of out) {
          stdout.set(b, at);
          at += b.length;
        }
        resolve({ code, signal, stdout, stderr });
      });
      // In chunks, waiting for the channel to drain: memory stays flat and `progress`
      // tells how far the bytes really got.
      const CHUNK = 256 << 10;
      let at = 0;
      const pump = () => {
        while (stdin && at < stdin.length) {
          const more = ch.write(stdin.subarray(at, at + CHUNK));
          at = Math.min(at + CHUNK, stdin.length);
          progress?.(at);
          if (!more) return void ch.once("drain", pump);
        }
        ch.end();
      };
      pump();
    });
  });
}
