/**
 * The TCP connection under an SSH session, and the line OpenSSH prints when it fails.
 * Apart from connect.ts so that it can be begun before ssh2 loads.
 */
import { connect as netConnect, type Socket } from "node:net";
import {
  loadConfigBlocks,
  type Resolved,
  resolveDestination,
  SshError,
  type SshOptions,
} from "./destination.ts";

export function describeConnectError(
  r: Resolved,
  err: Error & { code?: string; level?: string },
): string {
  const where = `connect to host ${r.hostname} port ${r.port}`;
  if (
    err.code === "ENOTFOUND" || err.code === "EAI_AGAIN" || /getaddrinfo|lookup/i.test(err.message)
  ) {
    return `ssh: Could not resolve hostname ${r.hostname}: Name or service not known`;
  }
  if (err.code === "ECONNREFUSED" || /refused/i.test(err.message)) {
    return `ssh: ${where}: Connection refused`;
  }
  if (err.code === "EHOSTUNREACH") return `ssh: ${where}: No route to host`;
  if (/timed out/i.test(err.message)) return `ssh: ${where}: Connection timed out`;
  if (err.level === "client-authentication") {
    return `${r.user}@${r.hostname}: Permission denied (publickey).`;
  }
  return `ssh: ${where}: ${err.message}`;
}

/**
 * The TCP connection, with Nagle's algorithm off: RPC frames are small and many are
 * in flight, and Nagle plus the peer's delayed ACKs stalled each call by ~40 ms.
 */
export function tcpConnect(r: Resolved): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: r.hostname, port: r.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new SshError(`ssh: connect to host ${r.hostname} port ${r.port}: Connection timed out`),
      );
    }, (r.config.connectTimeout ?? 20) * 1000);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once("error", (err: Error & { code?: string }) => {
      clearTimeout(timer);
      reject(new SshError(describeConnectError(r, err)));
    });
  });
}

/**
 * The TCP connection to `options`' destination, begun now: loading ssh2 takes ~150 ms
 * of a start here, during which the TCP handshake's round trip passes and sshd's
 * version line arrives. null when the connection goes through a jump host. Its
 * failure is the one `connect` reports (handled here: awaited only there).
 */
export function connectEarly(options: SshOptions): Promise<Socket> | null {
  const quiet = { ...options, log: () => {} };
  const r = resolveDestination(quiet, loadConfigBlocks(quiet));
  const jump = options.jump ?? r.config.proxyJump;
  if (jump && jump !== "none") return null;
  const socket = tcpConnect(r);
  socket.catch(() => {});
  return socket;
}
