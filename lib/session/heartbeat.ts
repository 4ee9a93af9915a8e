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
 * longer than `limitS` seconds. `other` names the other side in that message. An
 * error for an answer is an answer too: the other side is there.
 */
export function startHeartbeat(
  peer: RpcPeer,
  other: string,
  late: (why: string) => void,
  limitS = PING_LIMIT_S,
  everyS = Math.min(PING_EVERY_S, limitS / 2),
): void {
  let waiting = false;
  const timer = setInterval(() => {
    if (waiting) return;
    waiting = true;
    const overdue = setTimeout(() => {
      clearInterval(timer);
      late(`no answer from ${other} for ${limitS} s`);
    }, limitS * 1000);
    const answered = () => {
      clearTimeout(overdue);
      waiting = false;
    };
    peer.call(PING, null).then(answered, answered);
  }, everyS * 1000);
  peer.closed.then(() => clearInterval(timer));
}
