/**
 * A filesystem carried over RPC. The side with the files runs `serveFilesystem`
 * over any `Filesystem` (outrun's local side: a LoopbackFs of "/", as the invoking
 * user, so the local kernel enforces permissions); the side with the FUSE mount
 * serves `ProxyFs`, which forwards each typed request and returns the typed answer.
 * Node ids, handles and errno values pass through unchanged. FORGET travels as a
 * one-way event, like in the kernel protocol.
 */
import type { Filesystem, Request } from "../fuse/mod.ts";
import type { RpcPeer, Value } from "../rpc/mod.ts";

/** Every Filesystem method that answers (init, destroy and forget do not travel as calls). */
export const PROXIED_METHODS = [
  "lookup",
  "getattr",
  "setattr",
  "readlink",
  "symlink",
  "mknod",
  "mkdir",
  "unlink",
  "rmdir",
  "rename",
  "link",
  "open",
  "read",
  "write",
  "statfs",
  "release",
  "fsync",
  "setxattr",
  "getxattr",
  "listxattr",
  "removexattr",
  "flush",
  "opendir",
  "readdir",
  "readdirplus",
  "releasedir",
  "fsyncdir",
  "access",
  "create",
  "fallocate",
  "lseek",
  "copyFileRange",
  "syncfs",
] as const satisfies readonly (keyof Filesystem)[];

type Proxied = (typeof PROXIED_METHODS)[number];
type AnyMethod = (req: Request, into?: Uint8Array) => unknown;

/** Answers the other side's calls with `fs` (which may be synchronous). */
export function serveFilesystem(peer: RpcPeer, fs: Filesystem): void {
  for (const name of PROXIED_METHODS) {
    const method = fs[name] as AnyMethod | undefined;
    if (!method) continue; // the caller gets ENOSYS, as from a kernel
    peer.handle(`fs.${name}`, (args) => {
      const req = args as unknown as Request;
      if (name === "read") {
        const size = (req as Request<"READ">).size;
        const into = new Uint8Array(size);
        const n = method.call(fs, req, into) as Uint8Array | number;
        return typeof n === "number" ? into.subarray(0, n) : n;
      }
      const result = method.call(fs, req) as Value | Promise<Value>;
      return result === undefined ? null : result;
    });
  }
  peer.onEvent("fs.forget", (args) => {
    const [nodeid, nlookup] = args as [number, number];
    fs.forget?.(nodeid, nlookup);
  });
}

/** The FUSE side: each request goes to the other end and its answer comes back. */
export class ProxyFs implements Filesystem {
  constructor(readonly peer: RpcPeer) {
    for (const name of PROXIED_METHODS) {
      (this as unknown as Record<Proxied, AnyMethod>)[name] = (req: Request) =>
        this.peer.call(`fs.${name}`, req as unknown as Value);
    }
  }

  forget(nodeid: number, nlookup: number): void {
    this.peer.event("fs.forget", [nodeid, nlookup]);
  }
}
