/**
 * The test bed: throwaway remote hosts on this machine, each a network namespace
 * plus mount, pid and uts namespaces around a real OpenSSH sshd, reachable two
 * ways: direct (a veth, no shaping) and `-wan` (through a delay relay on
 * loopback and a second veth, optionally rate-limited with tc tbf).
 *
 * `up` is idempotent and fast once the roots are cached; `down` leaves no
 * process, mount, namespace or veth behind. Everything it writes for clients
 * lives under STATE_DIR: `ssh_config` (aliases deb, deb-wan, tiny, tiny-wan),
 * `known_hosts`, and the client key `id_ed25519`.
 */
import { debRoot, tinyRoot } from "./rootfs.ts";
import { isRunning, run, spawnDetached } from "./sh.ts";

export const STATE_DIR = Deno.env.get("OUTRUN_TESTBED_STATE") ?? "/run/outrun-testbed";
const HERE = new URL(".", import.meta.url).pathname;

export interface HostSpec {
  name: string;
  /** Small integer: picks the subnets, interface names and relay port. */
  index: number;
  mode: "pivot" | "chroot";
}

export const HOSTS: readonly HostSpec[] = [
  { name: "deb", index: 1, mode: "pivot" },
  { name: "tiny", index: 2, mode: "chroot" },
];

export interface TestbedConfig {
  /** Round-trip time the relay adds on `-wan` paths. */
  rttMs: number;
  /** tc tbf rate on the `-wan` veths (e.g. "100mbit"), or null for none. */
  rate: string | null;
  relayBasePort: number;
}

export const DEFAULT_CONFIG: TestbedConfig = { rttMs: 20, rate: null, relayBasePort: 42200 };

export interface HostAddresses {
  netns: string;
  directAddress: string;
  wanAddress: string;
  /** Root-namespace ends of the two veths. */
  directVeth: string;
  wanVeth: string;
  relayPort: number;
}

export function addresses(host: HostSpec, config: TestbedConfig): HostAddresses {
  return {
    netns: `outrun-${host.name}`,
    directAddress: `10.213.${host.index}.2`,
    wanAddress: `10.214.${host.index}.2`,
    directVeth: `ortb${host.index}d`,
    wanVeth: `ortb${host.index}w`,
    relayPort: config.relayBasePort + host.index,
  };
}

export const sshConfigPath = `${STATE_DIR}/ssh_config`;
export const knownHostsPath = `${STATE_DIR}/known_hosts`;
export const clientKeyPath = `${STATE_DIR}/id_ed25519`;
const configPath = `${STATE_DIR}/config.json`;
const relayPidPath = `${STATE_DIR}/relay.pid`;

async function readText(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return null;
  }
}

async function readPid(path: string): Promise<number | null> {
  const text = await readText(path);
  const pid = text === null ? NaN : Number(text.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

export async function readConfig(): Promise<TestbedConfig | null> {
  const text = await readText(configPath);
  return text === null ? null : { ...DEFAULT_CONFIG, ...JSON.parse(text) };
}

/** Reads the SSH version banner: proof that an sshd (not just a socket) answers. */
export async function sshBanner(hostname: string, port: number, timeoutMs = 3000): Promise<string> {
  const conn = await Deno.connect({ hostname, port });
  const timer = setTimeout(() => conn.close(), timeoutMs);
  try {
    const buf = new Uint8Array(256);
    let text = "";
    while (!text.includes("\n")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text.split("\n")[0].trim();
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
}

async function netnsList(): Promise<string[]> {
  const out = await run(["ip", "netns", "list"]);
  return out.split("\n").map((l) => l.split(" ")[0]).filter((n) => n.startsWith("outrun-"));
}

export interface HostStatus {
  name: string;
  netns: boolean;
  pid: number | null;
  direct: string | null;
  wan: string | null;
}

export interface TestbedStatus {
  config: TestbedConfig | null;
  relayPid: number | null;
  hosts: HostStatus[];
  healthy: boolean;
}

export async function status(): Promise<TestbedStatus> {
  const config = await readConfig();
  const namespaces = await netnsList();
  const relayPid = await readPid(relayPidPath);
  const relayAlive = relayPid !== null && isRunning(relayPid);
  const hosts: HostStatus[] = [];
  for (const host of HOSTS) {
    const a = addresses(host, config ?? DEFAULT_CONFIG);
    const pid = await readPid(`${STATE_DIR}/hosts/${host.name}/pid`);
    const probe = async (h: string, p: number) => {
      try {
        return await sshBanner(h, p, 2000);
      } catch {
        return null;
      }
    };
    hosts.push({
      name: host.name,
      netns: namespaces.includes(a.netns),
      pid: pid !== null && isRunning(pid) ? pid : null,
      direct: namespaces.includes(a.netns) ? await probe(a.directAddress, 22) : null,
      wan: relayAlive ? await probe("127.0.0.1", a.relayPort) : null,
    });
  }
  const healthy = config !== null && relayAlive &&
    hosts.every((h) =>
      h.netns && h.pid && h.direct?.startsWith("SSH-") && h.wan?.startsWith("SSH-")
    );
  return { config, relayPid: relayAlive ? relayPid : null, hosts, healthy };
}

async function killAndWait(pid: number): Promise<void> {
  try {
    Deno.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  for (let i = 0; i < 100 && isRunning(pid); i++) {
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Cuts every `-wan` link (true) or restores them (false): the delay relay stops or
 * goes on, so bytes in flight stay where they are and nothing new passes, as when a
 * cable is pulled. The direct paths are untouched (tests look at the remote there).
 */
export async function pauseWan(paused: boolean): Promise<void> {
  const pid = await readPid(relayPidPath);
  if (pid === null) throw new Error("testbed: no delay relay (is it up?)");
  Deno.kill(pid, paused ? "SIGSTOP" : "SIGCONT");
}

/** Stops everything `up` started, including leftovers of a crashed run. Idempotent. */
export async function down(): Promise<void> {
  const relayPid = await readPid(relayPidPath);
  if (relayPid !== null) await killAndWait(relayPid);
  for (const host of HOSTS) {
    const pid = await readPid(`${STATE_DIR}/hosts/${host.name}/pid`);
    if (pid !== null) await killAndWait(pid);
  }
  for (const ns of await netnsList()) {
    // Whatever still runs in the namespace (a pid file may be lost) goes too.
    const pids = (await run(["ip", "netns", "pids", ns], { allowFail: true }))
      .split("\n").map(Number).filter((p) => p > 0);
    for (const pid of pids) await killAndWait(pid);
    await run(["ip", "netns", "del", ns], { allowFail: true });
  }
  for (const host of HOSTS) {
    const a = addresses(host, DEFAULT_CONFIG);
    for (const veth of [a.directVeth, a.wanVeth]) {
      await run(["ip", "link", "del", veth], { allowFail: true, quiet: true });
    }
  }
  await run(["rm", "-rf", STATE_DIR]);
}

/**
 * Whether the sshd at `path` knows PerSourcePenalties (OpenSSH 9.8 and later): its
 * keyword table is in the binary. An older one refuses to start on the keyword.
 */
async function knowsPenalties(path: string): Promise<boolean> {
  const text = new TextDecoder("latin1").decode(await Deno.readFile(path));
  return text.toLowerCase().includes("persourcepenalties");
}

function sshdConfig(host: HostSpec, hostDir: string, penalties: boolean): string {
  const inRoot = host.mode === "pivot";
  const keyDir = inRoot ? "/etc/ssh/testbed" : hostDir;
  return [
    "# written by the outrun test bed",
    "ListenAddress 0.0.0.0:22",
    `HostKey ${keyDir}/ssh_host_ed25519_key`,
    "PermitRootLogin prohibit-password",
    "PubkeyAuthentication yes",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    "PidFile none",
    "StrictModes no",
    "MaxStartups 200",
    "MaxSessions 200",
    // Tests misbehave on purpose (cut handshakes, refused keys, killed sessions, health
    // probes that never log in): a penalised source would be refused for a while after.
    ...(penalties ? ["PerSourcePenalties no"] : []),
    "PrintMotd no",
    "AcceptEnv LANG LC_* TERM",
    ...(inRoot
      ? ["AuthorizedKeysFile .ssh/authorized_keys", "Subsystem sftp /usr/lib/openssh/sftp-server"]
      : [
        `ChrootDirectory ${hostDir}/mnt/root`,
        // Read before the chroot, from this machine's filesystem.
        `AuthorizedKeysFile ${hostDir}/authorized_keys`,
        "Subsystem sftp internal-sftp",
      ]),
    "",
  ].join("\n");
}

function clientSshConfig(config: TestbedConfig): string {
  const lines = ["# written by the outrun test bed: ssh -F THIS_FILE deb-wan true", ""];
  for (const host of HOSTS) {
    const a = addresses(host, config);
    lines.push(`Host ${host.name}`, `  HostName ${a.directAddress}`, "  Port 22", "");
    lines.push(`Host ${host.name}-wan`, "  HostName 127.0.0.1", `  Port ${a.relayPort}`, "");
  }
  lines.push(
    "Host *",
    "  User root",
    `  IdentityFile ${clientKeyPath}`,
    "  IdentitiesOnly yes",
    `  UserKnownHostsFile ${knownHostsPath}`,
    "  GlobalKnownHostsFile /dev/null",
    "  StrictHostKeyChecking yes",
    "  BatchMode yes",
    "  ConnectTimeout 10",
    "  LogLevel ERROR",
    "",
  );
  return lines.join("\n");
}

async function setupNetwork(host: HostSpec, config: TestbedConfig): Promise<void> {
  const a = addresses(host, config);
  await run(["ip", "netns", "add", a.netns]);
  await run(["ip", "-n", a.netns, "link", "set", "lo", "up"]);
  const links: [string, string, string, number][] = [
    [a.directVeth, "eth0", a.directAddress, 213],
    [a.wanVeth, "eth1", a.wanAddress, 214],
  ];
  for (const [outer, inner, address, net] of links) {
    await run([
      "ip",
      "link",
      "add",
      outer,
      "type",
      "veth",
      "peer",
      "name",
      inner,
      "netns",
      a.netns,
    ]);
    await run(["ip", "addr", "add", `10.${net}.${host.index}.1/30`, "dev", outer]);
    await run(["ip", "link", "set", outer, "up"]);
    await run(["ip", "-n", a.netns, "addr", "add", `${address}/30`, "dev", inner]);
    await run(["ip", "-n", a.netns, "link", "set", inner, "up"]);
  }
  if (config.rate) {
    const tbf = ["tbf", "rate", config.rate, "burst", "256kb", "latency", "400ms"];
    await run(["tc", "qdisc", "add", "dev", a.wanVeth, "root", ...tbf]);
    await run([
      "ip",
      "netns",
      "exec",
      a.netns,
      "tc",
      "qdisc",
      "add",
      "dev",
      "eth1",
      "root",
      ...tbf,
    ]);
  }
}

async function waitForSshd(hostname: string, port: number, what: string, log: string) {
  const deadline = Date.now() + 20_000;
  let lastError = "";
  while (Date.now() < deadline) {
    try {
      const banner = await sshBanner(hostname, port, 1000);
      if (banner.startsWith("SSH-")) return;
      lastError = `unexpected banner ${JSON.stringify(banner)}`;
    } catch (err) {
      lastError = String(err);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const tail = (await readText(log))?.split("\n").slice(-15).join("\n") ?? "";
  throw new Error(`testbed: ${what} (${hostname}:${port}) never answered: ${lastError}\n${tail}`);
}

/** Brings the whole test bed up; a healthy one with the same config is left alone. */
export async function up(wanted: Partial<TestbedConfig> = {}): Promise<TestbedStatus> {
  const config: TestbedConfig = { ...DEFAULT_CONFIG, ...wanted };
  const current = await status();
  if (current.healthy && JSON.stringify(current.config) === JSON.stringify(config)) return current;
  await down();
  try {
    const roots = { deb: await debRoot(), tiny: await tinyRoot() };
    await Deno.mkdir(`${STATE_DIR}/hosts`, { recursive: true, mode: 0o755 });
    await Deno.chmod(STATE_DIR, 0o755);
    await run([
      "ssh-keygen",
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "outrun-testbed",
      "-f",
      clientKeyPath,
    ]);
    const clientPub = await Deno.readTextFile(`${clientKeyPath}.pub`);
    const knownHosts: string[] = [];
    for (const host of HOSTS) {
      const a = addresses(host, config);
      const hostDir = `${STATE_DIR}/hosts/${host.name}`;
      await Deno.mkdir(`${hostDir}/mnt`, { recursive: true, mode: 0o755 });
      const key = `${hostDir}/ssh_host_ed25519_key`;
      await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name, "-f", key]);
      const hostPub = (await Deno.readTextFile(`${key}.pub`)).split(" ").slice(0, 2).join(" ");
      knownHosts.push(`${a.directAddress} ${hostPub}`, `[127.0.0.1]:${a.relayPort} ${hostPub}`);
      await Deno.writeTextFile(`${hostDir}/authorized_keys`, clientPub);
      const sshd = host.mode === "pivot"
        ? `${roots[host.name as "deb"]}/usr/sbin/sshd`
        : "/usr/sbin/sshd";
      await Deno.writeTextFile(
        `${hostDir}/sshd_config`,
        sshdConfig(host, hostDir, await knowsPenalties(sshd)),
      );
      await setupNetwork(host, config);
      const log = `${hostDir}/log`;
      const pid = spawnDetached([
        "ip",
        "netns",
        "exec",
        a.netns,
        "unshare",
        "--mount",
        "--uts",
        "--pid",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        `${HERE}host-init.sh`,
        host.name,
        host.mode,
        roots[host.name as keyof typeof roots],
        hostDir,
      ], log);
      await Deno.writeTextFile(`${hostDir}/pid`, `${pid}\n`);
    }
    await Deno.writeTextFile(knownHostsPath, knownHosts.join("\n") + "\n");
    await Deno.writeTextFile(sshConfigPath, clientSshConfig(config));
    const routes = HOSTS.map((host) => {
      const a = addresses(host, config);
      return `127.0.0.1:${a.relayPort}=${a.wanAddress}:22`;
    });
    const relayPid = spawnDetached([
      Deno.execPath(),
      "run",
      "--allow-net",
      `${HERE}delay_relay.ts`,
      "--delay-ms",
      String(config.rttMs / 2),
      ...routes,
    ], `${STATE_DIR}/relay.log`);
    await Deno.writeTextFile(relayPidPath, `${relayPid}\n`);
    for (const host of HOSTS) {
      const a = addresses(host, config);
      const log = `${STATE_DIR}/hosts/${host.name}/log`;
      await waitForSshd(a.directAddress, 22, host.name, log);
      await waitForSshd("127.0.0.1", a.relayPort, `${host.name}-wan`, `${STATE_DIR}/relay.log`);
    }
    await Deno.writeTextFile(configPath, JSON.stringify(config) + "\n");
  } catch (err) {
    await down().catch(() => {});
    throw err;
  }
  const result = await status();
  if (!result.healthy) throw new Error(`testbed: not healthy after up: ${JSON.stringify(result)}`);
  return result;
}
