/**
 * lib/rpc: typed, versioned, multiplexed calls over one byte stream (in outrun,
 * the SSH connection's exec channel). It knows nothing of FUSE or files.
 */
export * from "./codec.ts";
export * from "./peer.ts";
export * from "./tunnel.ts";
export * from "./typed.ts";
