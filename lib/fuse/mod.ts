/**
 * lib/fuse: the Linux FUSE kernel protocol spoken directly over /dev/fuse, in
 * TypeScript, with no libfuse. It knows nothing of networks or RPC: a
 * `Filesystem` answers requests, a `FuseSession` serves one connection, and
 * `mountFuse`/`unmountFuse`/`clearStaleMounts` manage the mount.
 */
export * from "./abi.ts";
export { byteString, stringBytes, utf8ByteString } from "../sys/bytes.ts";
export type { Awaitable, BackingFiles, Connection, Filesystem } from "./filesystem.ts";
export { FuseError, then } from "./filesystem.ts";
export * from "./mount.ts";
export { NodeTable } from "./nodes.ts";
export type { Node } from "./nodes.ts";
export * from "./reply.ts";
export * from "./request.ts";
export { FuseSession, type SessionOptions, WANTED_FLAGS } from "./session.ts";
