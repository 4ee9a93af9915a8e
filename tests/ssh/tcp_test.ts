/** The TCP connection begun before the SSH library loads (lib/ssh/tcp.ts). */
import assert from "node:assert/strict";
import { connectEarly } from "../../lib/ssh/tcp.ts";
import { SshError } from "../../lib/ssh/destination.ts";

/** A loopback port with nothing listening (taken, then let go). */
function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = l.addr as Deno.NetAddr;
  l.close();
  return port;
}

Deno.test("tcp: an early connection reaches the destination as ssh_config names it", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const dir = await Deno.makeTempDir({ prefix: "outrun-tcp-test-" });
  try {
    await Deno.writeTextFile(`${dir}/config`, `Host box\n  HostName 127.0.0.1\n  Port ${port}\n`);
    const accepted = listener.accept();
    const socket = await connectEarly({ destination: "box", configFile: `${dir}/config` })!;
    const conn = await accepted;
    assert.equal((conn.remoteAddr as Deno.NetAddr).port, socket.localPort);
    conn.close();
    socket.destroy();
  } finally {
    listener.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("tcp: a refused early connection fails as ssh says it, once awaited; a jump host gets none", async () => {
  const port = closedPort();
  const early = connectEarly({ destination: "127.0.0.1", port, configFile: "/dev/null" });
  assert.ok(early);
  // Nobody awaits it for a while (the SSH library loads): no unhandled rejection meanwhile.
  await new Promise((r) => setTimeout(r, 50));
  await assert.rejects(
    early,
    (e: Error) =>
      e instanceof SshError &&
      e.message === `ssh: connect to host 127.0.0.1 port ${port}: Connection refused`,
  );
  assert.equal(
    connectEarly({ destination: "127.0.0.1", port, configFile: "/dev/null", jump: "hop" }),
    null,
  );
});
