/** outrun's directory in this user's home: config, profiles, memo, ControlMaster sockets. */
export function outrunHome(): string {
  return `${Deno.env.get("HOME") ?? "/"}/.outrun`;
}

/** outrun's cache on this machine: payload memos, packed runs. */
export function localCacheDir(): string {
  return `${Deno.env.get("XDG_CACHE_HOME") ?? `${Deno.env.get("HOME") ?? "/tmp"}/.cache`}/outrun`;
}
