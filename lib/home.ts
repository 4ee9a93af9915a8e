/** outrun's directory in this user's home: config, profiles, memo, ControlMaster sockets. */
export function outrunHome(): string {
  return `${Deno.env.get("HOME") ?? "/"}/.outrun`;
}
