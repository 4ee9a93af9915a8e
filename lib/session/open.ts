/**
 * A session with a remote: one SSH connection, the payload there, the agent
 * started, and this machine's files (with the cache service) served to it over the
 * RPC inside the agent's exec channel. Commands then run on it: one (runRemote,
 * the usual way) or many (the ControlMaster, master.ts).
 */
import type { Client, ClientChannel } from "ssh2";
import type { Socket } from "node:net";
import { type CliOptions, sshOptions } from "../cli.ts";
import { LoopbackFs } from "../fs/loopback.ts";
import { ChangeWatch } from "../fs/change_watch.ts";
import { CHANGED_EVENT } from "../fs/file_wire.ts";
import { serveFilesystem } from "../fs/serve.ts";
import { CacheService, ProfileWarmup } from "../fs/cache/service.ts";
import { ContentIndex } from "../fs/cache/content_index.ts";
import { bulkCodec } from "../fs/cache/chunks.ts";
import { clientId, type OutrunConfig, outrunHome } from "../config.ts";
import { localCacheDir } from "../home.ts";
import { userEnv } from "../sys/env.ts";
import { RpcPeer, type Value } from "../rpc/mod.ts";
import { channelWritable, connect, type Resolved, SshError } from "../ssh/connect.ts";
import { VERSION } from "../version.ts";
import { localPayload, startAgent } from "./bootstrap.ts";
import type { CacheSettings } from "./protocol.ts";
import { describeCall } from "./describe.ts";
import { PING } from "./heartbeat.ts";

export interface Session {
  client: Client;
  resolved: Resolved;
  /** The agent's connection. */
  peer: RpcPeer;
  /** null with --no-cache. */
  cache: CacheService | null;
  /** What the run request carries for the remote cache (null with --no-cache). */
  cacheSettings: CacheSettings | null;
  /**
   * Whether the remote cache's directory was there when the agent started (null: not
   * known). Absent, it holds nothing: what a command needs can go before it is asked.
   */
  storePresent: boolean | null;
  /**
   * Resolves once the agent said hello; rejects, with why (sudo refused, ...), when it
   * did not start. openSession waits for it unless told not to.
   */
  agentUp: Promise<void>;
  /** Ends the connection (and with it the agent, its command and its mounts). */
  close(): Promise<void>;
}

export type Log = (line: string) => void;

/**
 * Connects, bootstraps and starts the agent; resolves once the agent said hello.
 * `lap(name)` is called as each phase ends (connect, bootstrap, start).
 */
export async function openSession(
  o: CliOptions,
  config: OutrunConfig,
  log: Log,
  lap: (name: string) => void = () => {},
  env: Record<string, string> = userEnv(),
  /** false: return as soon as the agent is started, its hello not awaited (see agentUp). */
  waitForAgent = true,
  /** The command's executable here: its profile is looked at while connecting. */
  exe: string | null = null,
  /** A TCP connection to the destination begun before (connectEarly). */
  socket: Promise<Socket> | null = null,
): Promise<Session> {
  // The payload's digests (the agent bundle's, ~30 ms) are taken while the handshake
  // waits on the network, and so is the command's profile (its paths' metas).
  const payloadReady = localPayload();
  payloadReady.catch(() => {}); // awaited below; a failure to connect comes first
  const profileDir = `${outrunHome()}/profiles`;
  const contentIndex = o.noCache ? null : openContentIndex(log);
  const warmup = o.noCache || o.noPrefetch || !exe ? null : new ProfileWarmup(exe, {
    profileDir,
    prefixes: config.cache.prefixes,
    contentIndex,
  });
  const { client, resolved } = await connect({
    ...sshOptions(o),
    log,
    ...(socket ? { socket } : {}),
  }).catch((err) => {
    warmup?.stop();
    throw err;
  });
  const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
  const close = async () => {
    client.end();
    await Promise.race([closed, new Promise((r) => setTimeout(r, 1000))]);
  };
  log("connected");
  lap("connect");
  try {
    const payload = await payloadReady;
    log(`payload ${payload.dirName}`);
    const started = await startAgent(client, payload, {
      sudo: resolved.user !== "root",
      verbose: o.verbose,
      quiet: o.quiet,
      storeDir: o.noCache ? null : config.cache.path,
    }, log);
    const channel: ClientChannel = started.channel;
    log(`agent started${started.storePresent === false ? "; the remote cache is empty" : ""}`);
    lap("bootstrap");
    let agentStderr = started.stderr;
    channel.stderr.on("data", (d: Uint8Array) => {
      agentStderr += new TextDecoder().decode(d);
      if (o.verbose > 0) log(new TextDecoder().decode(d).trimEnd());
    });
    channel.stderr.resume(); // paused by startAgent so that nothing is lost meanwhile
    // The agent's last words may come after its channel's close: what it said is
    // read to its end (or for a second at most) before saying why it did not start.
    const stderrEnded = new Promise<void>((resolve) => {
      channel.stderr.once("end", resolve);
      channel.stderr.once("close", resolve);
      channel.once("close", () => setTimeout(resolve, 1000));
    });
    const peer = new RpcPeer(
      {
        readable: started.stdout,
        writable: channelWritable(channel),
        reusable: true,
      },
      {
        program: `outrun ${VERSION}`,
        trace: o.verbose >= 2
          ? (method, args, ms, err) => log(`served ${describeCall(method, args, ms, err)}`)
          : undefined,
      },
    );
    peer.handle(PING, () => null);
    // The agent exiting (or sshd closing the channel) ends the RPC stream, whatever
    // the stream adapters make of it.
    channel.once("close", () => void peer.close(new Error("the remote agent exited")));
    // This machine's files, as this user: the local kernel decides what may be read.
    const files = new LoopbackFs({ root: "/" });
    // Changes made here to what the remote looked at are sent to it at once, so it
    // may keep names and attributes long (lib/fs/change_watch.ts).
    const watch = new ChangeWatch(
      files.nodes,
      (id) => files.pathOf(id),
      (changes) => peer.event(CHANGED_EVENT, changes as unknown as Value),
      log,
    );
    files.useWatch(watch);
    peer.closed.then(() => watch.stop());
    // What is looked up outside the cached prefixes goes into the command's profile:
    // the next run's validation answers those lookups ahead.
    serveFilesystem(peer, files, {
      onLookup: (parent, name) => cache?.noteLookup(files.pathOf(parent), name),
      codec: bulkCodec(config.cache.compression),
      afterCall: (req) => watch.afterCall(req),
    });
    const cache = o.noCache ? null : new CacheService(peer, {
      prefixes: config.cache.prefixes,
      prefetch: !o.noPrefetch,
      profileDir,
      env,
      fs: files,
      contentIndex,
      warmup,
      compression: config.cache.compression,
      packedDir: `${localCacheDir()}/packed`,
    });
    const agentUp = peer.remoteHello.then(() => log("agent up"), async (err) => {
      await stderrEnded;
      const hint = agentStderr.trim() ? `: ${agentStderr.trim().split("\n").at(-1)}` : "";
      throw new SshError(
        /sudo/.test(agentStderr)
          ? `outrun: ${resolved.user}@${resolved.hostname} needs root for mounts, and sudo -n failed${hint}`
          : `outrun: the remote agent did not start (${err.message})${hint}`,
      );
    });
    agentUp.catch(() => {}); // whoever needs it awaits it
    if (waitForAgent) await agentUp;
    const cacheSettings: CacheSettings | null = cache && {
      dir: config.cache.path,
      client: clientId(),
      prefixes: config.cache.prefixes,
      prefetch: !o.noPrefetch,
      passthrough: !o.noPassthrough,
      maxEntries: config.cache.maxEntries,
      maxBytes: config.cache.maxBytes,
    };
    return {
      client,
      resolved,
      peer,
      cache,
      cacheSettings,
      storePresent: started.storePresent,
      agentUp,
      close: async () => {
        watch.stop();
        cache?.close();
        await peer.close();
        await close();
      },
    };
  } catch (err) {
    await close();
    throw err;
  }
}

/** The content-id memo, or null when it cannot be opened (a read-only home: no memo). */
function openContentIndex(log: Log): ContentIndex | null {
  try {
    return new ContentIndex(`${outrunHome()}/content.sqlite`);
  } catch (e) {
    log(`no content-id memo: ${e}`);
    return null;
  }
}
