/**
 * Pings over a session's connection: sshd alone notices a silently cut link only
 * after hours (TCP keepalive), so each end that must not outlive the other (the
 * agent, a ControlMaster) asks the other side every few seconds and gives up when
 * an answer is late. Both ends answer PING.
 */
import type { RpcPeer } from "../rpc/mod.ts";

export const PING = "session.ping";
/** Seconds between pings, and how long an unanswered one may take before giving up. */
export const PING_EVERY_S = 3;
export const PING_LIMIT_S = 10;

/**
 * Pings `peer` until its connection ends; calls `late` (once) when an answer takes
 * longer than PING_LIMIT_S. `other` names the other side in that message.
 */
export function startHeartbeat(
  peer: RpcPeer,
  other: string,
  late: (why: string) => void,
): void {
  let waiting = false;
  const timer = setInterval(() => {
    if (waiting) return;
    waiting = true;
    const overdue = setTimeout(() => {
      clearInterval(timer);
      late(`no answer from ${other} for ${PING_LIMIT_S} s`);
    }, PING_LIMIT_S * 1000);
    peer.call(PING, null).then(() => {
      clearTimeout(overdue);
      waiting = false;
    }, () => clearTimeout(overdue));
  }, PING_EVERY_S * 1000);
  peer.closed.then(() => clearInterval(timer));
}
